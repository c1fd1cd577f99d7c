package fakem365

import "os"

// M365 is a fake Entra ID and a fake SMTP submission server wired together.
type M365 struct {
	Entra *Entra
	SMTP  *SMTP
	CA    *CA
}

// Start starts both fakes on 127.0.0.1 with random ports. Close stops them.
func Start() (*M365, error) {
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	entra, err := NewEntra()
	if err != nil {
		return nil, err
	}
	s, err := NewSMTP(entra, ca)
	if err != nil {
		entra.Close()
		return nil, err
	}
	return &M365{Entra: entra, SMTP: s, CA: ca}, nil
}

// WriteCA writes the CA certificate to path, for a relay's upstream.ca_file.
func (m *M365) WriteCA(path string) error {
	return os.WriteFile(path, m.CA.PEM, 0o644)
}

// Close stops both fakes.
func (m *M365) Close() {
	m.SMTP.Close()
	m.Entra.Close()
}
