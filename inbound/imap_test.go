package inbound

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// A client that sends its user name and password as literals gets
// continuations, is signed in upstream with the account's token, and gets
// the upstream's capabilities in its own tagged OK (without
// COMPRESS=DEFLATE); the session is then relayed and reported.
func TestIMAP_LoginWithLiteral(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok-1"}, imapUpstream("[CAPABILITY IMAP4 IMAP4rev1 IDLE COMPRESS=DEFLATE MOVE] "))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok-1"}}, nil)

	c := dial(t, h.imapAddr)
	c.expect("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID] oauthrelay IMAP proxy ready")
	c.send("a0 CAPABILITY")
	c.expect("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID")
	c.expect("a0 OK")
	c.send(`a1 ID ("name" "test")`)
	c.expect(`* ID ("name" "oauthrelay")`)
	c.expect("a1 OK")
	c.send(fmt.Sprintf("a2 LOGIN {%d}", len(testMailbox)))
	c.expect("+ ")
	c.send(testMailbox + " {9}")
	c.expect("+ ")
	c.send("s3cret pw")
	if got := c.line(); got != "a2 OK [CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE] LOGIN completed" {
		t.Fatalf("login answer %q", got)
	}
	c.send("a3 NOOP")
	c.expect("a3 OK NOOP completed.")
	c.send("a4 LOGOUT")
	c.expect("* BYE Microsoft Exchange")
	c.expect("a4 OK LOGOUT")
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Errorf("after LOGOUT the relay should close: %v", err)
	}
	s := <-h.sessions
	if s.Protocol != IMAP || s.User != testMailbox || s.Account != testAccount || s.BytesIn == 0 || s.BytesOut == 0 {
		t.Errorf("session %+v", s)
	}
	if got := <-h.logins; got != "imap ok" {
		t.Errorf("login event %q", got)
	}
	if up.xoa[0] != "user="+testMailbox+"\x01auth=Bearer tok-1\x01\x01" {
		t.Errorf("XOAUTH2 sent %q", up.xoa[0])
	}
	if l := h.log(); strings.Contains(l, "tok-1") || strings.Contains(l, "s3cret") {
		t.Errorf("a token or password in the log:\n%s", l)
	}
	if !strings.Contains(h.log(), "inbound: session ended") {
		t.Errorf("no session line in the log:\n%s", h.log())
	}
}

// AUTHENTICATE PLAIN with the initial response (SASL-IR) and without it;
// when the upstream's OK has no capabilities the relay asks for them.
func TestIMAP_AuthenticatePlain(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok-1"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok-1"}}, nil)

	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("x AUTHENTICATE PLAIN " + plain("app", "apppw"))
	c.expect("x OK [CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE UIDPLUS] LOGIN completed")
	c.send("y NOOP")
	c.expect("y OK")

	c2 := dial(t, h.imapAddr)
	c2.expect("* OK")
	c2.send("x AUTHENTICATE PLAIN")
	c2.expect("+ ")
	c2.send(plain(testMailbox, "s3cret pw"))
	c2.expect("x OK [CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE UIDPLUS] LOGIN completed")
}

// A client that sends its next commands in the same packet as its LOGIN
// (the relay has read them into its login buffer) still has them relayed,
// in order, once the session is handed over.
func TestIMAP_CommandsPipelinedAfterLoginAreRelayed(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok-1"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok-1"}}, nil)

	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw\r\nb NOOP\r\nc NOOP")
	c.expect("a OK [CAPABILITY")
	c.expect("b OK NOOP completed.")
	c.expect("c OK NOOP completed.")
}

// A wrong password or an unknown user is refused as such, and nothing is
// sent upstream; after three the session ends.
func TestIMAP_WrongPasswordNeverReachesUpstream(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok-1"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok-1"}}, nil)

	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send(`a LOGIN "helpdesk@contoso.com" "wrong"`)
	c.expect("a NO [AUTHENTICATIONFAILED]")
	c.send(`b LOGIN nobody@contoso.com wrong`)
	c.expect("b NO [AUTHENTICATIONFAILED]")
	c.send("c AUTHENTICATE PLAIN " + plain("app", "nope"))
	c.expect("c NO [AUTHENTICATIONFAILED]")
	c.expect("* BYE")
	if n := up.conns.Load(); n != 0 {
		t.Errorf("%d upstream connections for wrong passwords", n)
	}
	for range 3 {
		if got := <-h.logins; got != "imap bad_password" {
			t.Errorf("login event %q", got)
		}
	}
}

// Microsoft refusing the token: the relay drops it and tries once more
// with a fresh one; refused again, it records the refusal and tells the
// client to try later — never [AUTHENTICATIONFAILED].
func TestIMAP_TokenRefused(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, nil, imapUpstream(""))
	toks := &fakeTokens{tokens: []string{"stale", "fresh"}}
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", toks, nil)

	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a NO [UNAVAILABLE]")
	if toks.invalidated != 1 || up.conns.Load() != 2 {
		t.Errorf("invalidated %d, upstream connections %d: want one retry with a fresh token", toks.invalidated, up.conns.Load())
	}
	if len(toks.refusals) != 1 || toks.refusals[0] != "helpdesk imap NO AUTHENTICATE failed." {
		t.Errorf("refusals recorded: %q", toks.refusals)
	}
	if !strings.Contains(up.xoa[1], "Bearer fresh") {
		t.Errorf("second try used %q", up.xoa[1])
	}
	if got := <-h.logins; got != "imap refused" {
		t.Errorf("login event %q", got)
	}
}

// A stale token refused once is not the account's problem: the fresh one
// signs in.
func TestIMAP_StaleTokenRetriedFresh(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"fresh"}, imapUpstream(""))
	toks := &fakeTokens{tokens: []string{"stale", "fresh"}}
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", toks, nil)
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a OK [CAPABILITY")
	if len(toks.refusals) != 0 {
		t.Errorf("refusal recorded for a stale token: %q", toks.refusals)
	}
}

// An account that needs attention, or an upstream that cannot be reached,
// is a temporary failure.
func TestIMAP_Unavailable(t *testing.T) {
	_, pool := testTLS(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()

	h := newHarness(t, pool, dead, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("* BYE [UNAVAILABLE] cannot reach Microsoft 365")

	h2 := newHarness(t, pool, dead, "127.0.0.1:1", &fakeTokens{err: &tokens.AccountError{Account: testAccount, State: tokens.NeedsReconnect,
		Explanation: tokens.Explanation{Title: "the sign-in expired"}}}, nil)
	c2 := dial(t, h2.imapAddr)
	c2.expect("* OK")
	c2.send("a LOGIN app apppw")
	c2.expect("a NO [UNAVAILABLE] account helpdesk needs attention at the relay: the sign-in expired")

	h3 := newHarness(t, pool, dead, "127.0.0.1:1", &fakeTokens{err: errors.New("entra down")}, nil)
	c3 := dial(t, h3.imapAddr)
	c3.expect("* OK")
	c3.send("a LOGIN app apppw")
	c3.expect("a NO [UNAVAILABLE]")
}

// A 1 MiB literal goes through the relay both ways byte for byte.
func TestIMAP_OneMegabyteLiteralRelayedExactly(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a OK")

	body := make([]byte, 1<<20)
	rand.Read(body)
	c.send(fmt.Sprintf("b APPEND INBOX {%d}", len(body)))
	c.expect("+ ")
	c.c.Write(body)
	c.send("")
	c.expect(fmt.Sprintf("* 1 FETCH (BODY[] {%d}", len(body)))
	got := make([]byte, len(body))
	if _, err := io.ReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatal("the literal came back changed")
	}
	c.expect(")")
	c.expect("b OK APPEND completed.")
	c.c.Close()
	s := <-h.sessions
	if s.BytesIn < 1<<20 || s.BytesOut < 1<<20 {
		t.Errorf("bytes in %d out %d", s.BytesIn, s.BytesOut)
	}
}

// The per-account cap refuses a session beyond it as temporary.
func TestIMAP_TooManyConnectionsForTheMailbox(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.MaxConnectionsPerAccount = 1 })
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a OK")
	c2 := dial(t, h.imapAddr)
	c2.expect("* OK")
	c2.send("a LOGIN app apppw")
	c2.expect("a NO [UNAVAILABLE] too many connections for this mailbox")
	c.send("z LOGOUT")
	c.expect("* BYE")
	c.expect("z OK")
	<-h.sessions
	c2.send("b LOGIN app apppw")
	c2.expect("b OK")
}

// An address that keeps guessing is locked out: even the right password
// is refused, as temporary, unchecked.
func TestIMAP_LockoutAfterFailedLogins(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.LockoutBase = time.Hour })
	for i := 0; i < freeFailures+1; i++ {
		c := dial(t, h.imapAddr)
		c.expect("* OK")
		c.send("a LOGIN app wrong")
		c.expect("a NO [AUTHENTICATIONFAILED]")
	}
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a NO [UNAVAILABLE] too many failed logins")
	if up.conns.Load() != 0 {
		t.Error("a locked-out login reached the upstream")
	}
	if !strings.Contains(h.log(), "locked out") {
		t.Errorf("lock not logged:\n%s", h.log())
	}
}

// Beyond loopback there is no login without TLS; beyond allowed_networks
// no session at all.
func TestIMAP_OnlyLoopbackMayLogIn(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	run := func(remote string) *client {
		a, b := net.Pipe()
		go h.imap(remoteConn{a, remote})
		t.Cleanup(func() { b.Close() })
		return &client{t: t, c: b, r: newLineReader(b).r}
	}
	c := run("192.0.2.7:40000")
	c.expect("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED ID]")
	c.send("a LOGIN app apppw")
	c.expect("a NO [PRIVACYREQUIRED]")
	c.send("b AUTHENTICATE PLAIN")
	c.expect("b NO [PRIVACYREQUIRED]") // no continuation: the password is never asked for

	c2 := run("198.51.100.1:40000")
	c2.expect("* BYE access denied: 198.51.100.1 is not in listen.allowed_networks")
}

type remoteConn struct {
	net.Conn
	remote string
}

func (r remoteConn) RemoteAddr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", r.remote)
	return a
}

// Arguments as clients write them: atoms, quoted strings with escapes,
// lists, literals.
func TestScanIMAPArgs(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		n    int
		sync bool
		err  bool
	}{
		{`a LOGIN user pass`, []string{"a", "LOGIN", "user", "pass"}, -1, false, false},
		{`a LOGIN "us\"er" "p a\\ss"`, []string{"a", "LOGIN", `us"er`, `p a\ss`}, -1, false, false},
		{`a LOGIN {4}`, []string{"a", "LOGIN"}, 4, true, false},
		{`a LOGIN user {4+}`, []string{"a", "LOGIN", "user"}, 4, false, false},
		{`a ID ("name" "x")`, []string{"a", "ID", "(", "name", "x", ")"}, -1, false, false},
		{`a LOGIN "open`, []string{"a", "LOGIN"}, -1, false, true},
		{`a LOGIN {x}`, []string{"a", "LOGIN"}, -1, false, true},
		{`a LOGIN {4} b`, []string{"a", "LOGIN"}, -1, false, true},
	}
	for _, tc := range cases {
		got, n, sync, err := scanIMAPArgs(tc.in)
		if (err != nil) != tc.err || n != tc.n || sync != tc.sync || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("scan %q = %q %d %v %v", tc.in, got, n, sync, err)
		}
	}
}

// Close cuts relayed sessions (an IMAP client may idle for hours) and
// returns once they are gone.
func TestServer_CloseCutsRelayedSessions(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.CloseGrace = time.Minute })
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a OK")
	done := make(chan struct{})
	go func() { h.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("the session survived Close")
	}
	<-h.sessions
}

// gmailIMAP is imap.gmail.com's login as Google documents it: a refused
// XOAUTH2 gets a continuation with a base64 JSON error, and the NO only
// after the client's empty response.
func gmailIMAP(u *fakeUpstream, c net.Conn, r *bufio.Reader) {
	fmt.Fprintf(c, "* OK Gimap ready for requests from 127.0.0.1 fake\r\n")
	line, _ := r.ReadString('\n')
	f := strings.Fields(line)
	if len(f) != 4 || f[2] != "XOAUTH2" {
		fmt.Fprintf(c, "* BAD unexpected %q\r\n", line)
		return
	}
	if !u.checkXOAUTH2(f[3]) {
		fmt.Fprintf(c, "+ %s\r\n", base64.StdEncoding.EncodeToString([]byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`)))
		if l, _ := r.ReadString('\n'); l != "\r\n" {
			return // no empty response: Gmail never answers (the relay would hang)
		}
		fmt.Fprintf(c, "%s NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n", f[0])
		return
	}
	fmt.Fprintf(c, "* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584\r\n")
	fmt.Fprintf(c, "%s OK alerts@example.test authenticated (Success)\r\n", f[0])
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if f := strings.Fields(line); len(f) >= 2 {
			fmt.Fprintf(c, "%s OK Success\r\n", f[0])
		}
	}
}

// Against Gmail's IMAP: a good token signs in and the client gets Gmail's
// capabilities (less COMPRESS); a refused one gets the empty response
// Google asks for, one fresh token, then a temporary refusal for the app.
func TestIMAP_GmailUpstream(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"good"}, gmailIMAP)
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"good"}}, nil)
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	if got := c.line(); !strings.HasPrefix(got, "a OK [CAPABILITY IMAP4rev1 UNSELECT IDLE") || strings.Contains(got, "COMPRESS") {
		t.Fatalf("login answer %q", got)
	}
	c.send("b NOOP")
	c.expect("b OK Success")

	up2 := startUpstream(t, tlsCfg, nil, gmailIMAP)
	toks := &fakeTokens{tokens: []string{"stale", "fresh"}}
	h2 := newHarness(t, pool, up2.addr, "127.0.0.1:1", toks, nil)
	c2 := dial(t, h2.imapAddr)
	c2.expect("* OK")
	c2.send("a LOGIN app apppw")
	c2.expect("a NO [UNAVAILABLE]")
	if toks.invalidated != 1 || up2.conns.Load() != 2 {
		t.Errorf("invalidated %d, upstream connections %d: want one retry with a fresh token", toks.invalidated, up2.conns.Load())
	}
	if len(toks.refusals) != 1 || !strings.Contains(toks.refusals[0], "Invalid credentials") {
		t.Errorf("refusals recorded: %q", toks.refusals)
	}
}

// A client that sends its last commands and half-closes (printf … | nc
// -N) gets every byte of the answers: the relay does not pass its EOF on
// to Microsoft, which would then close (or reset) before its last reply is
// read, and a 1 MiB reply arrives whole too.
func TestIMAP_HalfCloseGetsTheWholeReply(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.Events = Events{} })
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for i := range 30 {
		c, err := net.Dial("tcp", h.imapAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		cmds := "a LOGIN app apppw\r\nb NOOP\r\nc LOGOUT\r\n"
		if i%3 == 0 {
			cmds = fmt.Sprintf("a LOGIN app apppw\r\nb APPEND INBOX {%d+}\r\n%s\r\nc LOGOUT\r\n", len(big), big)
		}
		go func() { // a client writes and reads at once (the reply to a big APPEND is big)
			io.WriteString(c, cmds)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if !strings.HasSuffix(string(got), "c OK LOGOUT completed.\r\n") || (i%3 == 0 && !strings.Contains(string(got), big)) {
			t.Fatalf("run %d: %d bytes, ending %q (%v)", i, len(got), truncate(string(got), 0)+string(got[max(0, len(got)-60):]), err)
		}
	}
}

// A client that just closes its socket (most do, without LOGOUT) gives its
// account slot back once the upstream has been quiet briefly, and Close
// never waits for such a session.
func TestIMAP_ClientGoneFreesItsSlot(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) {
		o.MaxConnectionsPerAccount = 1
		o.Events = Events{}
	})
	for i := range 3 {
		c := dial(t, h.imapAddr)
		c.expect("* OK")
		deadline := time.Now().Add(3 * time.Second)
		for {
			c.send("a LOGIN app apppw")
			if l := c.line(); strings.HasPrefix(l, "a OK") {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("login %d: the slot of the client before was not given back: %q", i, l)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.c.Close()
	}
	start := time.Now()
	h.srv.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

// One valid login does not reset an address's count of wrong guesses at
// another user's password (the lockout would otherwise never start).
func TestIMAP_OwnLoginDoesNotResetGuessesAtAnother(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) {
		o.Events = Events{}
		o.LockoutBase, o.LockoutMax = time.Minute, time.Minute
	})
	login := func(user, pass string) string {
		c := dial(t, h.imapAddr)
		c.expect("* OK")
		c.send("a LOGIN " + user + " " + pass)
		l := c.line()
		c.c.Close()
		return l
	}
	for round := range 3 {
		for i := range 5 {
			if l := login(testMailbox, "guess"); strings.Contains(l, "[UNAVAILABLE]") {
				if round == 0 {
					t.Fatalf("locked after %d guesses: fewer than the free 5", i)
				}
				return // locked: the valid login in between did not reset it
			}
		}
		if l := login("app", "apppw"); !strings.HasPrefix(l, "a OK") {
			t.Fatalf("the valid login: %q", l)
		}
	}
	t.Fatal("15 guesses at another user's password, each 5 followed by a valid login, and no lockout")
}

// A tag RFC 3501 does not allow (*, +, or with a brace) is refused with an
// untagged BAD, never echoed as a reply that reads as untagged or as a
// continuation; an unknown command is echoed at most 32 characters long.
func TestIMAP_InvalidTagsRefused(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	for _, tag := range []string{"*", "+", "a{", "x%"} {
		c.send(tag + " NOOP")
		if l := c.line(); !strings.HasPrefix(l, "* BAD invalid tag") {
			t.Errorf("tag %q: %q", tag, l)
		}
	}
	c2 := dial(t, h.imapAddr)
	c2.expect("* OK")
	c2.send("a " + strings.Repeat("X", 4000))
	if l := c2.line(); len(l) > 120 || !strings.HasPrefix(l, "a BAD XXXX") {
		t.Errorf("an unknown command echoed as %d bytes: %.80q", len(l), l)
	}
}

// Before login an address may hold 20 connections at once, and none for
// longer than the login phase allows, however many NOOPs it sends.
func TestIMAP_LoginPhaseLimits(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) {
		o.LoginPhaseMax = 500 * time.Millisecond
	})
	var open []*client
	for range maxPreLogin {
		c := dial(t, h.imapAddr)
		c.expect("* OK")
		open = append(open, c)
	}
	extra := dial(t, h.imapAddr)
	extra.expect("* BYE [UNAVAILABLE] too many connections are still logging in")
	c := open[0]
	deadline := time.Now().Add(5 * time.Second)
	for {
		io.WriteString(c.c, "n NOOP\r\n")
		l, err := c.r.ReadString('\n')
		if err != nil || strings.HasPrefix(l, "* BYE login took too long") {
			break // ended, with BYE or (its read deadline passed) without
		}
		if time.Now().After(deadline) {
			t.Fatal("NOOPs kept a connection in the login phase past its limit")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Its place is free again.
	waitUntil := time.Now().Add(2 * time.Second)
	for {
		n := dial(t, h.imapAddr)
		if l := n.line(); strings.HasPrefix(l, "* OK") {
			break
		} else if time.Now().After(waitUntil) {
			t.Fatalf("after one left: %q", l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A client that asks for a big reply and never reads it loses the session
// once a write to it has waited writeTimeout: its account slot comes back.
func TestIMAP_ClientThatNeverReadsIsCut(t *testing.T) {
	old := writeTimeout
	writeTimeout = 300 * time.Millisecond
	t.Cleanup(func() { writeTimeout = old })
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.Events = Events{} })
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send("a LOGIN app apppw")
	c.expect("a OK")
	big := strings.Repeat("x", 32<<20)
	go fmt.Fprintf(c.c, "b APPEND INBOX {%d+}\r\n%s\r\n", len(big), big) // echoed back; never read
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.Sessions()[testAccount][IMAP] != 0 || len(h.srv.Sessions()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the session of a client that never reads is still open: %v", h.srv.Sessions())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A half-closing client that reads its big reply only later still gets all
// of it: a write still under way is not the upstream falling quiet.
func TestIMAP_HalfCloseThenSlowReaderGetsEverything(t *testing.T) {
	tlsCfg, pool := testTLS(t)
	up := startUpstream(t, tlsCfg, []string{"tok"}, imapUpstream(""))
	h := newHarness(t, pool, up.addr, "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) { o.Events = Events{} })
	big := strings.Repeat("0123456789abcdef", 1<<19) // 8 MiB: more than the sockets buffer
	c, err := net.Dial("tcp", h.imapAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		fmt.Fprintf(c, "a LOGIN app apppw\r\nb APPEND INBOX {%d+}\r\n%s\r\nc LOGOUT\r\n", len(big), big)
		c.(*net.TCPConn).CloseWrite()
	}()
	time.Sleep(time.Second) // several times the harness's quiet period (300 ms)
	got, err := io.ReadAll(c)
	if !strings.HasSuffix(string(got), "c OK LOGOUT completed.\r\n") || !strings.Contains(string(got), big) {
		t.Fatalf("%d bytes (%v), ending %q", len(got), err, string(got[max(0, len(got)-40):]))
	}
}

// A line that starts with a space is not taken as tag + command; a login
// phase that runs out of time ends with a BYE.
func TestIMAP_LeadingSpaceAndAutologout(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, func(o *Options) {
		o.LoginTimeout = 200 * time.Millisecond
	})
	c := dial(t, h.imapAddr)
	c.expect("* OK")
	c.send(" NOOP")
	c.expect("* BAD a command starts with its tag")
	c.expect("* BYE autologout")
}
