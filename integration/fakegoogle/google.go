package fakegoogle

import (
	"os"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
)

// Google is the fake OAuth server and the fake smtp.gmail.com wired
// together: SMTP honours the tokens OAuth issues.
type Google struct {
	OAuth *OAuth
	SMTP  *SMTP
	CA    *fakem365.CA

	// OAuthURL is the base URL of the OAuth server, SMTPAddr the
	// host:port of the submission server (STARTTLS, like port 587).
	OAuthURL, SMTPAddr string
	// AuthorizeURL and TokenURL are the endpoints a relay is configured
	// with instead of accounts.google.com and oauth2.googleapis.com.
	AuthorizeURL, TokenURL string
}

// Start starts both fakes on 127.0.0.1 with random ports; the SMTP server
// presents a certificate from a fresh fakem365 CA. Close stops them.
func Start() (*Google, error) {
	ca, err := fakem365.NewCA()
	if err != nil {
		return nil, err
	}
	o, err := NewOAuth()
	if err != nil {
		return nil, err
	}
	s, err := NewSMTP(o, ca)
	if err != nil {
		o.Close()
		return nil, err
	}
	return &Google{
		OAuth: o, SMTP: s, CA: ca,
		OAuthURL: o.URL, SMTPAddr: s.Addr,
		AuthorizeURL: o.AuthorizeURL(), TokenURL: o.TokenURL(),
	}, nil
}

// WriteCA writes the CA certificate to path, for a relay's upstream.ca_file.
func (g *Google) WriteCA(path string) error {
	return os.WriteFile(path, g.CA.PEM, 0o644)
}

// Close stops the fakes.
func (g *Google) Close() {
	g.SMTP.Close()
	g.OAuth.Close()
}
