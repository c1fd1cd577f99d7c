package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// These tests are hostile clients (issue 12): password guessers, clients
// that hold a session open doing nothing, hosts that take every slot,
// senders that never finish DATA. Each speaks SMTP over TCP to a real
// Listener.

// limitsRig is a Listener with what a test looks at: its log, its
// refusals by reason, and a clock for the AUTH lockout.
type limitsRig struct {
	l    *Listener
	addr string
	q    *captureQueue
	log  *lockedBuffer

	mu       sync.Mutex
	refusals map[string]int
	skew     atomic.Int64 // added to the lockout's clock
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (r *limitsRig) refused(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refusals[reason]
}

// advance moves the lockout's clock on.
func (r *limitsRig) advance(d time.Duration) { r.skew.Add(int64(d)) }

func newLimitsRig(t *testing.T, routes []Route, mod func(*ListenerConfig)) *limitsRig {
	t.Helper()
	cfg := ListenerConfig{
		Hostname:        "relay.test",
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxMessageBytes: 1 << 20,
		ReadTimeout:     time.Minute,
		WriteTimeout:    10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	if routes == nil {
		routes = []Route{{Account: "contoso", Patterns: []string{"*@contoso.test"}}}
	}
	r := &limitsRig{q: &captureQueue{}, log: &lockedBuffer{}, refusals: map[string]int{}}
	events := ListenerEvents{Rejected: func(reason string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.refusals[reason]++
	}}
	r.l = NewListener(cfg, r.q, NewRouter(routes), slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug})), events)
	r.l.lockout.Now = func() time.Time { return time.Now().Add(time.Duration(r.skew.Load())) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go r.l.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.l.Shutdown(ctx)
	})
	return r
}

// closedByServer reports whether the server has closed c (EOF on read).
func closedByServer(c *smtpClient) bool {
	c.conn.SetReadDeadline(time.Now().Add(replyWait))
	_, err := c.text.R.ReadByte()
	return err == io.EOF
}

// The case: 500 wrong AUTH PLAIN on one connection, then the right
// password, was accepted. Now the connection ends after 5 failures, and
// the address is locked out across connections: even the right password
// is refused, unchecked, until the lock ends.
func TestListener_AuthGuessingEndsTheSessionAndLocksTheAddress(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	r := newLimitsRig(t, nil, func(c *ListenerConfig) { c.Users = map[string][]byte{"app": hash} })
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	wrong, right := "AUTH PLAIN "+enc("\x00app\x00guess"), "AUTH PLAIN "+enc("\x00app\x00pw")

	c := dialSMTP(t, r.addr)
	c.expect("250", "EHLO guesser.test")
	for range 5 {
		c.expect("535 5.7.8", "%s", wrong)
	}
	if got := c.read(); !strings.HasPrefix(got, "421 4.7.0") || !strings.Contains(got, "authentication") {
		t.Fatalf("after 5 failed AUTH: %q, want 421 4.7.0 saying why", got)
	}
	if !closedByServer(c) {
		t.Fatal("the connection stays open after 421")
	}

	// A new connection does not start afresh: its first failure locks the
	// address (1 s), and during the lock the right password is refused.
	c = dialSMTP(t, r.addr)
	c.expect("250", "EHLO guesser.test")
	c.expect("535 5.7.8", "%s", wrong)
	c.expect("454 4.7.0", "%s", right)
	if strings.Count(r.log.String(), "address locked out") != 1 || !strings.Contains(r.log.String(), "client=127.0.0.1") {
		t.Errorf("want one lockout log line with the address:\n%s", r.log.String())
	}
	// A lock begun during an exchange refuses the password that follows.
	r.advance(2 * time.Second) // past the 1 s lock
	other := dialSMTP(t, r.addr)
	other.expect("250", "EHLO guesser.test")
	other.expect("334", "AUTH LOGIN")
	other.expect("334", "%s", enc("app"))
	c.expect("535 5.7.8", "%s", wrong) // the 7th failure: a 2 s lock
	other.expect("454 4.7.0", "%s", enc("pw"))
	c.expect("454 4.7.0", "AUTH LOGIN")
	c.expect("454 4.7.0", "%s", right)
	if got := c.read(); !strings.HasPrefix(got, "421 4.7.0") {
		t.Fatalf("after 5 failed AUTH on the second connection: %q", got)
	}
	if n := strings.Count(r.log.String(), "address locked out"); n != 2 {
		t.Errorf("%d lockout log lines, want one per lock (2)", n)
	}
	if got := r.refused("auth"); got != 11 {
		t.Errorf("rejections{reason=auth} = %d, want every failed AUTH (11)", got)
	}

	// After the lock the right password works, and the success forgets
	// the failures.
	r.advance(3 * time.Second)
	c = dialSMTP(t, r.addr)
	c.expect("250", "EHLO guesser.test")
	c.expect("235 2.7.0", "%s", right)
	c = dialSMTP(t, r.addr)
	c.expect("250", "EHLO guesser.test")
	for range 4 {
		c.expect("535 5.7.8", "%s", wrong)
	}
	c.expect("235 2.7.0", "%s", right)
}

// A session cannot be held by commands that send no mail: NOOP every few
// seconds kept one open forever (issue 12). Past MaxJunkCommands the
// session ends; a message accepted starts the count afresh.
func TestListener_CommandsWithoutMailEndTheSession(t *testing.T) {
	r := newLimitsRig(t, nil, func(c *ListenerConfig) { c.MaxJunkCommands = 100 })
	c := dialSMTP(t, r.addr)
	c.expect("250", "EHLO client.test")                      // 1
	c.expect("250", "RSET")                                  // 2
	c.expect("252", "VRFY bob")                              // 3
	c.expect("502", "HELP")                                  // 4
	c.expect("500", "XYZZY")                                 // 5: refused commands count
	c.expect("550 5.7.1", "MAIL FROM:<x@elsewhere.example>") // 6
	for range 93 {
		c.expect("250", "NOOP") // 7…99
	}
	c.expect("250", "MAIL FROM:<a@contoso.test>")
	c.expect("250", "RCPT TO:<b@example.com>")
	c.expect("354", "DATA")
	c.raw("Subject: x\r\n\r\nx\r\n.\r\n")
	if got := c.read(); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("message: %q", got)
	}
	for range 100 {
		c.expect("250", "NOOP") // counted afresh
	}
	if got := c.cmd("NOOP"); !strings.HasPrefix(got, "421 4.7.0 relay.test Too many commands without mail") {
		t.Fatalf("the 101st command without mail: %q", got)
	}
	if !closedByServer(c) {
		t.Error("the connection stays open after 421")
	}
	if n := len(r.q.messages()); n != 1 {
		t.Errorf("queued %d", n)
	}

	// Recipients refused within a message's first 100 RCPTs are a client's
	// mistakes and do not count; RCPTs past them do.
	c = dialSMTP(t, r.addr)
	c.expect("250", "EHLO client.test") // 1
	c.expect("250", "MAIL FROM:<a@contoso.test>")
	for range 100 {
		c.expect("553 5.1.3", "RCPT TO:<a b@example.com>")
	}
	for range 99 {
		c.expect("553 5.1.3", "RCPT TO:<a b@example.com>") // 2…100
	}
	if got := c.cmd("RCPT TO:<b@example.com>"); !strings.HasPrefix(got, "421 4.7.0") {
		t.Fatalf("past 100 refused RCPTs and 100 commands without mail: %q", got)
	}
	if r.refused("junk_commands") != 2 {
		t.Errorf("refusals %v", r.refusals)
	}
}

// A session ends at MaxSessionTime however busy it keeps: one sending NOOP
// well within the read timeout, one saying nothing. A message being
// received when the time comes is finished first.
func TestListener_SessionTimeIsBounded(t *testing.T) {
	const limit = 600 * time.Millisecond
	r := newLimitsRig(t, nil, func(c *ListenerConfig) { c.MaxSessionTime = limit })

	busy := dialSMTP(t, r.addr)
	start := time.Now()
	busy.expect("250", "EHLO busy.test")
	var got string
	for time.Since(start) < replyWait {
		if got = busy.cmd("NOOP"); !strings.HasPrefix(got, "250") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasPrefix(got, "421 4.7.0") || time.Since(start) < limit {
		t.Fatalf("after %v of NOOPs: %q, want 421 4.7.0 once %v have passed", time.Since(start), got, limit)
	}

	quiet := dialSMTP(t, r.addr) // read timeout is a minute: only the session limit ends it
	start = time.Now()
	if got := quiet.read(); !strings.HasPrefix(got, "421 4.7.0") || time.Since(start) > limit+time.Second {
		t.Errorf("a silent session got %q after %v", got, time.Since(start))
	}

	sending := dialSMTP(t, r.addr)
	start = time.Now()
	sending.expect("250", "EHLO sending.test")
	sending.expect("250", "MAIL FROM:<a@contoso.test>")
	sending.expect("250", "RCPT TO:<b@example.com>")
	sending.expect("354", "DATA")
	sending.raw("Subject: long\r\n\r\nfirst half\r\n")
	time.Sleep(limit - time.Since(start) + 200*time.Millisecond)
	sending.raw("second half\r\n.\r\n")
	if got := sending.read(); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("a message begun in time: %q", got)
	}
	if got := sending.cmd("NOOP"); !strings.HasPrefix(got, "421 4.7.0") {
		t.Errorf("after the message: %q", got)
	}
	if n := r.refused("session_time"); n != 3 {
		t.Errorf("rejections{reason=session_time} = %d, want 3", n)
	}
}

// One host cannot take every session: past MaxSessionsPerClient its new
// connections are refused, and others still get in.
func TestListener_SessionsPerClientAreCapped(t *testing.T) {
	r := newLimitsRig(t, nil, func(c *ListenerConfig) { c.MaxSessions, c.MaxSessionsPerClient = 10, 2 })
	first := dialSMTP(t, r.addr)
	dialSMTP(t, r.addr)
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	third := &smtpClient{t: t, conn: conn, text: textproto.NewConn(conn)}
	if got := third.read(); got != "421 4.7.0 Too many connections from your address, try again later" {
		t.Errorf("a third session from one address: %q", got)
	}
	if err := r.l.Accepting(); err != nil {
		t.Errorf("one host at its cap makes the listener unready: %v", err)
	}
	// Another address is not affected (Linux routes all of 127/8 to lo).
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	other, err := d.Dial("tcp", r.addr)
	if err != nil {
		t.Skipf("cannot dial from 127.0.0.2: %v", err)
	}
	defer other.Close()
	oc := &smtpClient{t: t, conn: other, text: textproto.NewConn(other)}
	if got := oc.read(); !strings.HasPrefix(got, "220 ") {
		t.Errorf("another address: %q", got)
	}
	// A session that ends frees its slot.
	first.expect("221", "QUIT")
	closedByServer(first)
	deadline := time.Now().Add(replyWait)
	for {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		got := (&smtpClient{t: t, conn: c, text: textproto.NewConn(c)}).read()
		c.Close()
		if strings.HasPrefix(got, "220 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed session is not freed: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := r.refused("client_sessions"); n < 1 {
		t.Errorf("rejections{reason=client_sessions} = %d", n)
	}
}

// ReadTimeout bounds each read, not DATA as a whole: a client sending
// slowly but steadily gets its message in, though it takes several read
// timeouts in all.
func TestListener_SlowSteadyDataIsReceived(t *testing.T) {
	r := newLimitsRig(t, nil, func(c *ListenerConfig) { c.ReadTimeout = 300 * time.Millisecond })
	c := dialSMTP(t, r.addr)
	c.expect("250", "EHLO slow.test")
	c.expect("250", "MAIL FROM:<a@contoso.test>")
	c.expect("250", "RCPT TO:<b@example.com>")
	c.expect("354", "DATA")
	start := time.Now()
	c.raw("Subject: slow\r\n\r\n")
	for i := range 8 {
		time.Sleep(150 * time.Millisecond)
		c.raw(strings.Repeat("x", i+1) + "\r\n")
	}
	c.raw(".\r\n")
	if got := c.read(); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("after %v (read timeout 300ms): %q", time.Since(start), got)
	}
}

// MaxDataTime bounds a whole DATA: a client trickling forever is cut off
// with 421 4.4.2, and nothing of it is queued.
func TestListener_DataTimeIsBounded(t *testing.T) {
	const limit = 700 * time.Millisecond
	r := newLimitsRig(t, nil, func(c *ListenerConfig) {
		c.ReadTimeout, c.MaxDataTime = 2*time.Second, limit
	})
	c := dialSMTP(t, r.addr)
	c.expect("250", "EHLO trickle.test")
	c.expect("250", "MAIL FROM:<a@contoso.test>")
	c.expect("250", "RCPT TO:<b@example.com>")
	c.expect("354", "DATA")
	start := time.Now()
	c.raw("Subject: trickle\r\n\r\n")
	go func() { // a line every 100 ms, until the server hangs up
		for time.Since(start) < replyWait {
			time.Sleep(100 * time.Millisecond)
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.conn.Write([]byte("x\r\n")); err != nil {
				return
			}
		}
	}()
	got := c.read()
	if !strings.HasPrefix(got, "421 4.4.2") || time.Since(start) < limit {
		t.Fatalf("after %v: %q, want 421 4.4.2 past %v", time.Since(start), got, limit)
	}
	if n := len(r.q.messages()); n != 0 {
		t.Errorf("queued %d messages", n)
	}
	if r.refused("data_time") != 1 {
		t.Errorf("refusals %v", r.refusals)
	}
}

// The null sender <> (bounces, DSNs) is accepted and routed by the From:
// header's address, else to NullSenderAccount; the message is queued
// whole, its envelope sender still <>.
func TestListener_NullSenderRoutedByFromHeader(t *testing.T) {
	routes := []Route{
		{Account: "helpdesk", Patterns: []string{"helpdesk@contoso.test"}},
		{Account: "fabrikam", Patterns: []string{"*@fabrikam.test"}},
	}
	r := newLimitsRig(t, routes, func(c *ListenerConfig) { c.NullSenderAccount = "helpdesk" })
	longHeader := "X-Long: " + strings.Repeat("y", 70<<10) + "\r\n"
	for _, tt := range []struct{ name, data, account string }{
		{"From: routes", "From: Mail Delivery System <MAILER-DAEMON@fabrikam.test>\r\nSubject: Undelivered Mail\r\n\r\nbody\r\n", "fabrikam"},
		{"folded From:", "Subject: x\r\nfrom:\r\n  \"Postmaster\"\r\n  <postmaster@FABRIKAM.test>\r\n\r\nbody\r\n", "fabrikam"},
		{"From: no route matches", "From: MAILER-DAEMON@satellite.example (Mail Delivery System)\r\n\r\nbody\r\n", "helpdesk"},
		{"no From:", "Subject: no from\r\n\r\nFrom: a@fabrikam.test\r\n", "helpdesk"},
		{"no header", "\r\nFrom: a@fabrikam.test\r\n", "helpdesk"},
		{"From: past 64 KiB", longHeader + "From: a@fabrikam.test\r\n\r\nbody\r\n", "helpdesk"},
		{"unparsable From:", "From: <<<\r\n\r\nbody\r\n", "helpdesk"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialSMTP(t, r.addr)
			c.expect("250", "EHLO satellite.test")
			c.expect("250 2.1.0", "MAIL FROM:<>")
			c.expect("250", "RCPT TO:<app@contoso.test>")
			c.expect("354", "DATA")
			c.raw(tt.data + ".\r\n")
			if got := c.read(); !strings.HasPrefix(got, "250 2.0.0") {
				t.Fatalf("got %q", got)
			}
			msgs := r.q.messages()
			m := msgs[len(msgs)-1]
			if m.env.From != "" || m.env.Account != tt.account {
				t.Errorf("queued from %q for account %q, want <> for %q", m.env.From, m.env.Account, tt.account)
			}
			if string(m.body) != tt.data {
				t.Errorf("queued body differs from what was sent:\n%.200q\nwant\n%.200q", m.body, tt.data)
			}
		})
	}

	// Without a NullSenderAccount, <> routes only through "*", as before.
	plain := newLimitsRig(t, routes, nil)
	c := dialSMTP(t, plain.addr)
	c.expect("250", "EHLO satellite.test")
	c.expect("550 5.7.1", "MAIL FROM:<>")
}

// Every reason the listener counts is listed, so metrics show each from
// the start (at 0) and the README's list can be checked against one place.
func TestRejectionReasons_ListsEveryReasonCounted(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, r := range RejectionReasons() {
		listed[r] = true
	}
	used := regexp.MustCompile(`(?:reject|refuse)\((?:c, )?"([a-z_]+)"`)
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range used.FindAllStringSubmatch(string(src), -1) {
			seen++
			if !listed[m[1]] {
				t.Errorf("%s counts reason %q, which RejectionReasons does not list", f, m[1])
			}
		}
	}
	if seen < len(listed) {
		t.Errorf("found %d uses of %d reasons: is the pattern still right?", seen, len(listed))
	}
}
