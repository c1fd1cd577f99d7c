package fakem365

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Helpers shared by the IMAP and POP3 tests.

const (
	scopeSMTP = "https://outlook.office.com/SMTP.Send"
	scopeIMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"
	scopePOP  = "https://outlook.office.com/POP.AccessAsUser.All"
)

// tokenWith signs mailbox in with the delegated scopes and returns the
// access token.
func tokenWith(t *testing.T, m *M365, scopes ...string) string {
	t.Helper()
	cfg := oauthConfig(m)
	cfg.Scopes = append([]string{"offline_access"}, scopes...)
	v := oauth2.GenerateVerifier()
	q := authorize(t, cfg, v)
	tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func appToken(t *testing.T, m *M365) string {
	t.Helper()
	cc := clientcredentials.Config{ClientID: "daemon-app", ClientSecret: "s", AuthStyle: oauth2.AuthStyleInParams,
		TokenURL: m.Entra.URL + "/contoso.test/oauth2/v2.0/token", Scopes: []string{"https://outlook.office365.com/.default"}}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func xoauth2B64(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// sendToSelf submits body through the fake SMTP as mailbox, to mailbox.
func sendToSelf(t *testing.T, m *M365, body string) {
	t.Helper()
	c := dial(t, m)
	if err := c.Auth(xoauth2{mailbox, tokenWith(t, m, scopeSMTP)}); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(mailbox, []string{"other@example.com", strings.ToUpper(mailbox)}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}

// lineConn is a raw text-protocol client over implicit TLS, for checking
// replies word for word.
type lineConn struct {
	t *testing.T
	c *tls.Conn
	r *bufio.Reader
}

func dialLines(t *testing.T, m *M365, addr string) *lineConn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: m.CA.Pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &lineConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (l *lineConn) send(line string) {
	l.t.Helper()
	if _, err := l.c.Write([]byte(line + "\r\n")); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lineConn) line() string {
	l.t.Helper()
	s, err := l.r.ReadString('\n')
	if err != nil {
		l.t.Fatalf("read: %v (after %q)", err, s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// expect reads lines until one starts with prefix (IMAP untagged data
// comes first) and returns it.
func (l *lineConn) expect(prefix string) string {
	l.t.Helper()
	for {
		s := l.line()
		if strings.HasPrefix(s, prefix) {
			return s
		}
	}
}

// eventually polls cond for up to five seconds: a connection is counted
// closed by the server's goroutine after the client has gone.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMailstore_SMTPDeliversToEachRecipientMailbox(t *testing.T) {
	m := start(t)
	body := "Subject: x\r\n\r\nhello\r\n"
	sendToSelf(t, m, body)
	for _, box := range []string{mailbox, "Other@Example.com"} {
		if got := m.Mail.Messages(box); len(got) != 1 || string(got[0]) != body {
			t.Errorf("%s holds %q", box, got)
		}
	}
	if got := m.Mail.Messages("nobody@contoso.test"); len(got) != 0 {
		t.Errorf("a non-recipient got %q", got)
	}
}
