package inbound

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
)

// remoteClient runs session on one end of a pipe that looks like a client
// at remote, and returns the other end.
func remoteClient(t *testing.T, session func(net.Conn), remote string) *client {
	t.Helper()
	a, b := net.Pipe()
	go session(remoteConn{a, remote})
	t.Cleanup(func() { b.Close() })
	return &client{t: t, c: b, r: newLineReader(b).r}
}

// startTLS turns c into a TLS client trusting the test certificate.
func (c *client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	tc := tls.Client(c.c, &tls.Config{RootCAs: cfg.RootCAs, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.c, c.r = tc, newLineReader(tc).r
}

// With listen.tls's certificate a client on another host gets STARTTLS and
// LOGINDISABLED, and may log in once TLS is on (the rule of SMTP AUTH).
func TestIMAP_STARTTLSThenLoginFromAnotherHost(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.TLS = tlsCfg })

	c := remoteClient(t, h.imap, "192.0.2.7:40000")
	c.expect("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED ID]")
	c.send("a LOGIN app apppw")
	c.expect("a NO [PRIVACYREQUIRED] login needs a private connection: use STARTTLS first")
	c.send("b STARTTLS")
	c.expect("b OK Begin TLS negotiation now")
	c.startTLS(&tls.Config{RootCAs: pool})
	c.send("c CAPABILITY")
	c.expect("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID") // no STARTTLS, no LOGINDISABLED
	c.expect("c OK")
	c.send("d STARTTLS")
	c.expect("d BAD TLS is already on")
	c.send("e LOGIN app apppw")
	c.expect("e OK [CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE UIDPLUS] LOGIN completed")
	c.send("f NOOP")
	c.expect("f OK")
	if got := h.srv.Sessions(); got[testAccount][IMAP] != 1 || len(got) != 1 {
		t.Errorf("Sessions() = %v during the session", got)
	}
	c.c.Close()
	<-h.sessions
	if got := h.srv.Sessions(); len(got) != 0 {
		t.Errorf("Sessions() = %v after the session", got)
	}
	if got := <-h.logins; got != "imap not_private" {
		t.Errorf("first login event %q", got)
	}
	if got := <-h.logins; got != "imap ok" {
		t.Errorf("second login event %q", got)
	}
}

// Loopback is offered STARTTLS too, but may log in without it.
func TestIMAP_LoopbackOfferedSTARTTLS(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.TLS = tlsCfg })
	c := dial(t, h.imapAddr)
	c.expect("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR ID]")
}

// Commands sent after STARTTLS in the same packet would be taken as sent
// over TLS (CVE-2011-0411): the session ends instead.
func TestIMAP_STARTTLSInjectionRefused(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.TLS = tlsCfg })
	c := remoteClient(t, h.imap, "192.0.2.7:40000")
	c.expect("* OK")
	c.send("a STARTTLS\r\nb LOGIN app apppw")
	c.expect("* BYE commands after STARTTLS")
}

// Without a certificate STARTTLS is neither offered nor done.
func TestIMAP_NoSTARTTLSWithoutCertificate(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	c := remoteClient(t, h.imap, "192.0.2.7:40000")
	c.expect("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED ID]")
	c.send("a STARTTLS")
	c.expect("a BAD STARTTLS is not offered: listen.tls has no certificate")
	c.send("b LOGIN app apppw")
	c.expect("b NO [PRIVACYREQUIRED] login needs a private connection: connect from this machine (loopback); for other machines, the relay's admin must set listen.tls")
}

// POP3: STLS in CAPA, no USER or SASL before it beyond loopback, then
// USER/PASS over TLS; a USER given before STLS is forgotten.
func TestPOP3_STLSThenLoginFromAnotherHost(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	msg := "Subject: hi\r\n\r\nbody\r\n"
	up := startUpstream(t, tlsCfg, []string{"tok"}, pop3Upstream(msg))
	h := newHarness(t, pool, "127.0.0.1:1", up.addr, &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.TLS = tlsCfg })

	c := remoteClient(t, h.pop3, "192.0.2.7:40000")
	c.expect("+OK oauthrelay POP3 proxy ready")
	capa := func() string {
		c.send("CAPA")
		c.expect("+OK")
		var caps []string
		for l := c.line(); l != "."; l = c.line() {
			caps = append(caps, l)
		}
		return strings.Join(caps, ",")
	}
	if got := capa(); !strings.Contains(got, "STLS") || strings.Contains(got, "USER") || strings.Contains(got, "SASL") {
		t.Errorf("CAPA before STLS %q", got)
	}
	c.send("USER app")
	c.expect("-ERR [SYS/PERM] login needs a private connection: use STLS first")
	c.send("STLS")
	c.expect("+OK Begin TLS negotiation")
	c.startTLS(&tls.Config{RootCAs: pool})
	if got := capa(); strings.Contains(got, "STLS") || !strings.Contains(got, "USER") || !strings.Contains(got, "SASL PLAIN") {
		t.Errorf("CAPA after STLS %q", got)
	}
	c.send("PASS apppw")
	c.expect("-ERR USER first")
	c.send("USER app")
	c.expect("+OK")
	c.send("PASS apppw")
	c.expect("+OK User successfully authenticated.")
	c.send("RETR 1")
	c.expect("+OK")
	c.expect("Subject: hi")
}

func TestPOP3_STLSInjectionRefused(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.TLS = tlsCfg })
	c := remoteClient(t, h.pop3, "192.0.2.7:40000")
	c.expect("+OK")
	c.send("STLS\r\nUSER app")
	c.expect("-ERR commands after STLS")
}
