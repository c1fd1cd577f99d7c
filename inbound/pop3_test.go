package inbound

import (
	"io"
	"net"
	"strings"
	"testing"
)

// USER/PASS signs in upstream with AUTH XOAUTH2; the client then reads a
// message through the relay.
func TestPOP3_UserPassThenRetr(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	msg := "Subject: hi\r\n\r\n..a dot-stuffed line\r\nbye\r\n"
	up := startUpstream(t, tlsCfg, []string{"tok"}, pop3Upstream(msg))
	h := newHarness(t, pool, "127.0.0.1:1", up.addr, &fakeTokens{tokens: []string{"tok"}}, nil)

	c := dial(t, h.popAdr)
	c.expect("+OK oauthrelay POP3 proxy ready")
	c.send("CAPA")
	c.expect("+OK")
	var caps []string
	for l := c.line(); l != "."; l = c.line() {
		caps = append(caps, l)
	}
	if got := strings.Join(caps, ","); !strings.Contains(got, "USER") || !strings.Contains(got, "SASL PLAIN") {
		t.Errorf("CAPA %q", got)
	}
	c.send("USER " + testMailbox)
	c.expect("+OK")
	c.send("PASS s3cret pw")
	c.expect("+OK User successfully authenticated.")
	c.send("STAT")
	c.expect("+OK 1 ")
	c.send("RETR 1")
	c.expect("+OK")
	var got strings.Builder
	for l := c.line(); l != "."; l = c.line() {
		got.WriteString(l + "\r\n")
	}
	if got.String() != msg {
		t.Errorf("RETR gave %q, want %q", got.String(), msg)
	}
	c.send("QUIT")
	c.expect("+OK Microsoft Exchange Server POP3 server signing off.")
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Errorf("after QUIT the relay should close: %v", err)
	}
	s := <-h.sessions
	if s.Protocol != POP3 || s.Account != testAccount || s.User != testMailbox {
		t.Errorf("session %+v", s)
	}
	if l := h.log(); strings.Contains(l, "tok") && strings.Contains(l, "Bearer") || strings.Contains(l, "s3cret") {
		t.Errorf("a secret in the log:\n%s", l)
	}
}

// AUTH PLAIN, with and without the initial response.
func TestPOP3_AuthPlain(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, pop3Upstream("x\r\n"))
	h := newHarness(t, pool, "127.0.0.1:1", up.addr, &fakeTokens{tokens: []string{"tok"}}, nil)
	c := dial(t, h.popAdr)
	c.expect("+OK")
	c.send("AUTH PLAIN " + plain("app", "apppw"))
	c.expect("+OK User successfully authenticated.")

	c2 := dial(t, h.popAdr)
	c2.expect("+OK")
	c2.send("AUTH PLAIN")
	c2.expect("+ ")
	c2.send(plain("app", "apppw"))
	c2.expect("+OK User successfully authenticated.")
}

// A wrong password is [AUTH] and never goes upstream; a refused token is
// [SYS/TEMP], retried once fresh and recorded; an unreachable upstream is
// [SYS/TEMP].
func TestPOP3_Refusals(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, nil, pop3Upstream("x\r\n"))
	toks := &fakeTokens{tokens: []string{"stale", "fresh"}}
	h := newHarness(t, pool, "127.0.0.1:1", up.addr, toks, nil)
	c := dial(t, h.popAdr)
	c.expect("+OK")
	c.send("USER app")
	c.expect("+OK")
	c.send("PASS wrong")
	c.expect("-ERR [AUTH]")
	if up.conns.Load() != 0 {
		t.Error("a wrong password reached the upstream")
	}
	c.send("USER app")
	c.expect("+OK")
	c.send("PASS apppw")
	c.expect("-ERR [SYS/TEMP] Microsoft refused")
	if toks.invalidated != 1 || len(toks.refusals) != 1 || toks.refusals[0] != "helpdesk pop3 -ERR Authentication failure: unknown user name or bad password." {
		t.Errorf("invalidated %d, refusals %q", toks.invalidated, toks.refusals)
	}

	h2 := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	c2 := dial(t, h2.popAdr)
	c2.expect("+OK")
	c2.send("AUTH PLAIN " + plain("app", "apppw"))
	c2.expect("-ERR [SYS/TEMP] cannot reach Microsoft 365")
	if _, err := c2.r.ReadByte(); err != io.EOF {
		t.Errorf("an unreachable upstream should end the session: %v", err)
	}
}

// Beyond loopback USER and AUTH PLAIN are refused before a password is
// asked for; beyond allowed_networks there is no session.
func TestPOP3_OnlyLoopbackMayLogIn(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	run := func(remote string) *client {
		a, b := net.Pipe()
		go h.pop3(remoteConn{a, remote})
		t.Cleanup(func() { b.Close() })
		return &client{t: t, c: b, r: newLineReader(b).r}
	}
	c := run("192.0.2.7:40000")
	c.expect("+OK oauthrelay POP3 proxy ready")
	c.send("USER app")
	c.expect("-ERR [SYS/PERM] login needs a private connection")
	c.send("AUTH PLAIN")
	c.expect("-ERR [SYS/PERM] login needs a private connection")
	c.send("CAPA")
	c.expect("+OK")
	for l := c.line(); l != "."; l = c.line() {
		if l == "USER" || strings.HasPrefix(l, "SASL") {
			t.Errorf("CAPA offers %q beyond loopback", l)
		}
	}
	c2 := run("198.51.100.1:40000")
	c2.expect("-ERR [SYS/PERM] access denied: 198.51.100.1 is not in listen.allowed_networks")
}
