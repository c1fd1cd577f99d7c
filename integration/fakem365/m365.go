package fakem365

import "os"

// M365 is a fake Entra ID with fake SMTP submission, IMAP and POP3 servers
// wired together: what SMTP accepts lands in the recipients' INBOXes, which
// IMAP and POP3 serve.
type M365 struct {
	Entra *Entra
	SMTP  *SMTP
	IMAP  *IMAP
	POP3  *POP3
	Mail  *Mailstore
	CA    *CA
}

// Start starts the fakes on 127.0.0.1 with random ports. Close stops them.
func Start() (*M365, error) { return StartWith(Options{}) }

// Deliver puts data, byte for byte, into the INBOX of mailbox, as if it
// had arrived from outside.
func (m *M365) Deliver(mailbox string, data []byte) { m.Mail.Deliver(mailbox, data) }

// WriteCA writes the CA certificate to path, for a relay's upstream.ca_file.
func (m *M365) WriteCA(path string) error {
	return os.WriteFile(path, m.CA.PEM, 0o644)
}

// Close stops the fakes.
func (m *M365) Close() {
	m.POP3.Close()
	m.IMAP.Close()
	m.SMTP.Close()
	m.Entra.Close()
}
