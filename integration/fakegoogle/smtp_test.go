package fakegoogle

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// xoauth2 is a SASL XOAUTH2 client that remembers Gmail's error challenge.
type xoauth2 struct {
	user, token string
	challenge   []byte
}

func (x *xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

func (x *xoauth2) Next(challenge []byte) ([]byte, error) {
	x.challenge = challenge
	return []byte{}, nil // Gmail's documented answer to the error challenge
}

// dialTLS connects to the fake SMTP server and runs EHLO and STARTTLS.
func dialTLS(t *testing.T, g *Google) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(g.SMTPAddr, &tls.Config{RootCAs: g.CA.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantReply(t *testing.T, err error, want *smtp.SMTPError) {
	t.Helper()
	var got *smtp.SMTPError
	if !errors.As(err, &got) {
		t.Fatalf("want SMTP reply %d, got %v", want.Code, err)
	}
	if got.Code != want.Code || got.EnhancedCode != want.EnhancedCode || got.Message != want.Message {
		t.Fatalf("got %d %v %q\nwant %d %v %q", got.Code, got.EnhancedCode, got.Message, want.Code, want.EnhancedCode, want.Message)
	}
}

func TestSMTP_XOAUTH2ThenMessageByteExact(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	c := dialTLS(t, g)
	if err := c.Auth(&xoauth2{user: testUser, token: tok.AccessToken}); err != nil {
		t.Fatal(err)
	}
	// Dot-stuffed lines, a lone CR and 8-bit bytes must come out exactly as
	// the client meant them. (No bare LF: go-smtp's client turns it into
	// CRLF before it reaches the wire.)
	msg := "From: <alice@example.test>\r\nTo: <bob@example.org>\r\nSubject: t\r\n\r\n.leading dot\r\n..two\r\nlone\rcr \xc3\xa9\r\n"
	if err := c.SendMail(testUser, []string{"bob@example.org", "carol@example.org"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	got := g.SMTP.WaitMessages(1, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	m := got[0]
	if m.Mailbox != testUser || m.From != testUser || len(m.To) != 2 || m.To[1] != "carol@example.org" {
		t.Fatalf("envelope %+v", m)
	}
	if !bytes.Equal(m.Data, []byte(msg)) {
		t.Fatalf("data\n%q\nwant\n%q", m.Data, msg)
	}
	if attempts, ok := g.SMTP.Auths(); attempts != 1 || ok != 1 {
		t.Fatalf("auths %d/%d", attempts, ok)
	}
}

func TestSMTP_BadTokenGetsChallengeThen535(t *testing.T) {
	g := startGoogle(t)
	mailOnly := tokenFor(t, g, MailScope)
	noMail := tokenFor(t, g, "email")
	tests := []struct {
		name, user, token, challenge string
	}{
		{"unknown token", testUser, "ya29.forged", `{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}`},
		{"other user", "bob@example.test", mailOnly.AccessToken, `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`},
		{"scope without mail", testUser, noMail.AccessToken, `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTLS(t, g)
			x := &xoauth2{user: tc.user, token: tc.token}
			wantReply(t, c.Auth(x), ReplyBadCredentials)
			if string(x.challenge) != tc.challenge {
				t.Fatalf("challenge %s, want %s", x.challenge, tc.challenge)
			}
		})
	}
	g.OAuth.RevokeAll()
	c := dialTLS(t, g)
	wantReply(t, c.Auth(&xoauth2{user: testUser, token: mailOnly.AccessToken}), ReplyBadCredentials)
}

func TestSMTP_MailNeedsAuth(t *testing.T) {
	g := startGoogle(t)
	c := dialTLS(t, g)
	wantReply(t, c.Mail(testUser, nil), ReplyAuthRequired)
}

func TestSMTP_FaultInjection(t *testing.T) {
	tests := []struct {
		stage Stage
		reply *smtp.SMTPError
	}{
		{StageAuth, ReplyTooManyLogins},
		{StageMail, ReplyTryAgainLater},
		{StageRcpt, ReplyTooManyRecipients},
		{StageRcpt, ReplyNoSuchUser},
		{StageData, ReplyDailyLimit},
		{StageData, ReplyMessageTooBig},
	}
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %d", tc.stage, tc.reply.Code), func(t *testing.T) {
			g.SMTP.FailNext(tc.stage, tc.reply)
			c := dialTLS(t, g)
			err := c.Auth(&xoauth2{user: testUser, token: tok.AccessToken})
			if tc.stage == StageAuth {
				wantReply(t, err, tc.reply)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = c.SendMail(testUser, []string{"bob@example.org"}, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
			wantReply(t, err, tc.reply)
			if tc.reply.Code == 421 {
				if err := c.Noop(); err == nil {
					t.Fatal("connection still open after 421")
				}
			}
		})
	}
	// Each fault was used once: now mail goes through.
	c := dialTLS(t, g)
	if err := c.Auth(&xoauth2{user: testUser, token: tok.AccessToken}); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(testUser, []string{"bob@example.org"}, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
}

// TestSMTP_Transcript checks the lines on the wire, where a client library
// would hide them.
func TestSMTP_Transcript(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	w := dialWire(t, g)
	w.send("EHLO relay.example")
	w.expect("250-smtp.gmail.com at your service, [127.0.0.1]", "250-SIZE 35882577", "250-8BITMIME", "250-STARTTLS",
		"250-ENHANCEDSTATUSCODES", "250-PIPELINING", "250-CHUNKING", "250 SMTPUTF8")
	w.send("AUTH XOAUTH2")
	w.expect("530 5.7.0 Must issue a STARTTLS command first. " + gsmtp)
	w.send("MAIL FROM:<" + testUser + ">")
	w.expect("530 5.7.0 Must issue a STARTTLS command first. " + gsmtp)
	w.startTLS(g)
	w.send("EHLO relay.example")
	w.expect("250-smtp.gmail.com at your service, [127.0.0.1]", "250-SIZE 35882577", "250-8BITMIME",
		"250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
		"250-ENHANCEDSTATUSCODES", "250-PIPELINING", "250-CHUNKING", "250 SMTPUTF8")
	w.send("MAIL FROM:<" + testUser + ">")
	w.expect("530-5.7.0 Authentication Required. For more information, go to",
		"530 5.7.0  https://support.google.com/mail/?p=WantAuthError "+gsmtp)
	w.send("AUTH XOAUTH2 " + base64.StdEncoding.EncodeToString([]byte("user="+testUser+"\x01auth=Bearer ya29.bad\x01\x01")))
	w.expect("334 " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}`)))
	w.send("")
	w.expect("535-5.7.8 Username and Password not accepted. For more information, go to",
		"535 5.7.8  https://support.google.com/mail/?p=BadCredentials "+gsmtp)
	w.send("AUTH XOAUTH2")
	w.expect("334 ")
	w.send(base64.StdEncoding.EncodeToString([]byte("user=" + testUser + "\x01auth=Bearer " + tok.AccessToken + "\x01\x01")))
	w.expect("235 2.7.0 Accepted")
	w.send("MAIL FROM:<" + testUser + ">")
	w.expect("250 2.1.0 OK " + gsmtp)
	w.send("RCPT TO:<bob@example.org>")
	w.expect("250 2.1.5 OK " + gsmtp)
	w.send("DATA")
	w.expect("354 Go ahead " + gsmtp)
	w.send("Subject: x\r\n\r\nhello\r\n.")
	if line := w.line(); !strings.HasPrefix(line, "250 2.0.0 OK  ") || !strings.HasSuffix(line, " "+gsmtp) {
		t.Fatalf("after DATA: %q", line)
	}
	w.send("MAIL FROM:<" + testUser + "> SIZE=35882578")
	w.expect(replyLines(ReplyMessageTooBig)...)
	w.send("QUIT")
	w.expect("221 2.0.0 closing connection " + gsmtp)
	if _, err := w.tp.ReadLine(); err != io.EOF {
		t.Fatalf("after QUIT: %v", err)
	}
}

func TestSMTP_PipelinedAfterSTARTTLSRefused(t *testing.T) {
	g := startGoogle(t)
	raw, err := net.DialTimeout("tcp", g.SMTPAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(raw)
	tp.ReadLine()
	// RFC 3207 section 4.2 / CVE-2011-0411: a command sent in the same
	// flight as STARTTLS must not be taken as if it came over TLS.
	raw.Write([]byte("EHLO x\r\nSTARTTLS\r\nEHLO injected\r\n"))
	for {
		l, err := tp.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	if l, _ := tp.ReadLine(); !strings.HasPrefix(l, "454 4.5.0 SMTP protocol violation") {
		t.Fatalf("got %q", l)
	}
}

func TestSMTP_OverSizeGetsGmailsReply(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	c := dialTLS(t, g)
	if err := c.Auth(&xoauth2{user: testUser, token: tok.AccessToken}); err != nil {
		t.Fatal(err)
	}
	// SIZE= over the limit is refused at MAIL.
	wantReply(t, c.Mail(testUser, &smtp.MailOptions{Size: MaxMessageBytes + 1}), ReplyMessageTooBig)
}

func TestSMTP_BDAT(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	w := dialWire(t, g)
	w.send("EHLO relay.example")
	w.skipReply()
	w.startTLS(g)
	w.send("EHLO relay.example")
	w.skipReply()
	w.send("AUTH XOAUTH2 " + base64.StdEncoding.EncodeToString([]byte("user="+testUser+"\x01auth=Bearer "+tok.AccessToken+"\x01\x01")))
	w.expect("235 2.7.0 Accepted")
	w.send("MAIL FROM:<" + testUser + ">")
	w.expect("250 2.1.0 OK " + gsmtp)
	w.send("RCPT TO:<bob@example.org>")
	w.expect("250 2.1.5 OK " + gsmtp)
	// RFC 3030: BDAT data is not dot-stuffed and is taken as it is.
	body := "Subject: b\r\n\r\n.not stuffed\r\n"
	w.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body[:len(body)-2]))
	line := w.line()
	if !strings.HasPrefix(line, "250 2.0.0 OK  ") {
		t.Fatalf("BDAT LAST: %q", line)
	}
	got := g.SMTP.WaitMessages(1, 5*time.Second)
	if len(got) != 1 || string(got[0].Data) != body {
		t.Fatalf("recorded %+v", got)
	}
}

// wireConn talks SMTP line by line, for tests of what is on the wire.
type wireConn struct {
	t   *testing.T
	raw net.Conn
	tp  *textproto.Conn
}

// dialWire connects and reads the greeting.
func dialWire(t *testing.T, g *Google) *wireConn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", g.SMTPAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	w := &wireConn{t: t, raw: raw, tp: textproto.NewConn(raw)}
	w.expect("220 smtp.gmail.com ESMTP " + gsmtp)
	return w
}

func (w *wireConn) send(cmd string) { w.t.Helper(); w.tp.PrintfLine("%s", cmd) }

func (w *wireConn) line() string {
	w.t.Helper()
	l, err := w.tp.ReadLine()
	if err != nil {
		w.t.Fatal(err)
	}
	return l
}

func (w *wireConn) expect(lines ...string) {
	w.t.Helper()
	for _, want := range lines {
		if got := w.line(); got != want {
			w.t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// skipReply reads up to the last line of a multi-line reply.
func (w *wireConn) skipReply() {
	w.t.Helper()
	for l := w.line(); len(l) > 3 && l[3] == '-'; l = w.line() {
	}
}

func (w *wireConn) startTLS(g *Google) {
	w.t.Helper()
	w.send("STARTTLS")
	w.expect("220 2.0.0 Ready to start TLS")
	w.tp = textproto.NewConn(tls.Client(w.raw, &tls.Config{RootCAs: g.CA.Pool, ServerName: "127.0.0.1"}))
}
