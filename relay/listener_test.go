package relay

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"golang.org/x/crypto/bcrypt"
)

// These tests speak SMTP to a real Listener over TCP, as applications do,
// and look at what it would have queued.

type queuedMessage struct {
	env  queue.Envelope
	body []byte // without the relay's Received: field
}

// captureQueue is an Enqueuer that keeps what it is given in memory.
type captureQueue struct {
	mu   sync.Mutex
	msgs []queuedMessage
}

func (q *captureQueue) Enqueue(ctx context.Context, env queue.Envelope, body io.Reader) (string, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs = append(q.msgs, queuedMessage{env: env, body: stripReceivedField(b)})
	return fmt.Sprintf("%020d", len(q.msgs)), nil
}

func (q *captureQueue) messages() []queuedMessage {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queuedMessage(nil), q.msgs...)
}

// stripReceivedField drops the first field, our Received:, and its continuation lines.
func stripReceivedField(b []byte) []byte {
	s := string(b)
	if !strings.HasPrefix(s, "Received: ") {
		return b
	}
	for {
		i := strings.Index(s, "\r\n")
		if i < 0 {
			return nil
		}
		s = s[i+2:]
		if !strings.HasPrefix(s, "\t") && !strings.HasPrefix(s, " ") {
			return []byte(s)
		}
	}
}

// startListener serves a Listener on 127.0.0.1 that routes *@contoso.test.
func startListener(t *testing.T, mod func(*ListenerConfig)) (string, *captureQueue) {
	t.Helper()
	_, addr, q := serveListener(t, mod)
	return addr, q
}

func serveListener(t *testing.T, mod func(*ListenerConfig)) (*Listener, string, *captureQueue) {
	t.Helper()
	cfg := ListenerConfig{
		Hostname:        "relay.test",
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxMessageBytes: 1 << 20,
		MaxRecipients:   100,
		ReadTimeout:     time.Minute, // longer than any wait below: a hang fails the test
		WriteTimeout:    10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	q := &captureQueue{}
	l := NewListener(cfg, q, NewRouter([]Route{{Account: "contoso", Patterns: []string{"*@contoso.test"}}}),
		slog.New(slog.DiscardHandler), ListenerEvents{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Shutdown(ctx)
	})
	return l, ln.Addr().String(), q
}

// smtpClient sends command lines and raw bytes by hand, so tests can send
// what a library would not.
type smtpClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

// replyWait bounds every wait for a reply; the listener's read timeout is
// longer, so a reply that only a timeout would bring fails the test.
const replyWait = 10 * time.Second

func dialSMTP(t *testing.T, addr string) *smtpClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &smtpClient{t: t, conn: conn, text: textproto.NewConn(conn)}
	if r := c.read(); !strings.HasPrefix(r, "220 ") {
		t.Fatalf("greeting %q", r)
	}
	return c
}

// read returns the next reply as "code text" (the lines of a multi-line
// reply joined with "\n").
func (c *smtpClient) read() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(replyWait))
	code, msg, err := c.text.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("no reply: %v", err)
	}
	return fmt.Sprintf("%d %s", code, msg)
}

func (c *smtpClient) cmd(format string, args ...any) string {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(replyWait))
	if err := c.text.PrintfLine(format, args...); err != nil {
		c.t.Fatal(err)
	}
	return c.read()
}

// expect sends a command and fails unless the reply starts with want.
func (c *smtpClient) expect(want, format string, args ...any) string {
	c.t.Helper()
	r := c.cmd(format, args...)
	if !strings.HasPrefix(r, want) {
		c.t.Fatalf("%.80q: got %q, want %q…", fmt.Sprintf(format, args...), r, want)
	}
	return r
}

// raw writes bytes as they are.
func (c *smtpClient) raw(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(replyWait))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatal(err)
	}
}

func TestListener_PathOver256OctetsRefusedWhereItArrives(t *testing.T) {
	addr, q := startListener(t, nil)
	c := dialSMTP(t, addr)
	c.expect("250", "EHLO client.test")

	// RFC 5321 4.5.3.1.3: a path is at most 256 octets, "<" and ">"
	// included. Its local part may well exceed 64 (VERP, tracking).
	const from, to = "@contoso.test", "@example.com"
	sender := strings.Repeat("s", 256-2-len(from)) + from
	rcpt := strings.Repeat("r", 256-2-len(to)) + to
	c.expect("250 2.1.0", "MAIL FROM:<%s>", sender)
	c.expect("250 2.1.5", "RCPT TO:<%s>", rcpt)
	if r := c.expect("553 5.1.3", "RCPT TO:<r%s>", rcpt); !strings.Contains(r, "256") {
		t.Errorf("reply %q does not name the limit", r)
	}
	c.expect("553 5.1.3", "RCPT TO:<%s%s>", strings.Repeat("x", 120000), to)
	c.expect("354", "DATA")
	c.raw("Subject: long paths\r\n\r\nbody\r\n.\r\n")
	c.read()
	msgs := q.messages()
	if len(msgs) != 1 || msgs[0].env.From != sender || len(msgs[0].env.To) != 1 || msgs[0].env.To[0] != rcpt {
		t.Fatalf("queued %+v", msgs)
	}

	if r := c.expect("501 5.1.7", "MAIL FROM:<s%s>", sender); !strings.Contains(r, "256") {
		t.Errorf("reply %q does not name the limit", r)
	}
	c.expect("501 5.1.7", "MAIL FROM:<%s%s>", strings.Repeat("x", 120000), from)
	c.expect("250 2.1.0", "MAIL FROM:<a%s>", from) // the session goes on
}

func TestListener_RecipientsBounded(t *testing.T) {
	t.Run("default accepts RFC 5321's 100 and no more", func(t *testing.T) {
		addr, q := startListener(t, func(c *ListenerConfig) { c.MaxRecipients = 0 })
		c := dialSMTP(t, addr)
		if r := c.expect("250", "EHLO client.test"); !strings.Contains(r, "LIMITS RCPTMAX=100") {
			t.Errorf("EHLO does not advertise the limit:\n%s", r)
		}
		c.expect("250", "MAIL FROM:<a@contoso.test>")
		for i := range 100 { // RFC 5321 4.5.3.1.8: at least 100
			c.expect("250 2.1.5", "RCPT TO:<r%d@example.com>", i)
		}
		c.expect("452 4.5.3 Too many recipients", "RCPT TO:<r100@example.com>")
		c.expect("354", "DATA")
		c.raw("Subject: x\r\n\r\nx\r\n.\r\n")
		c.read()
		if msgs := q.messages(); len(msgs) != 1 || len(msgs[0].env.To) != 100 {
			t.Fatalf("queued %d messages", len(msgs))
		}
	})
	t.Run("configured", func(t *testing.T) {
		addr, _ := startListener(t, func(c *ListenerConfig) { c.MaxRecipients = 3 })
		c := dialSMTP(t, addr)
		c.expect("250", "EHLO client.test")
		c.expect("250", "MAIL FROM:<a@contoso.test>")
		for i := range 3 {
			c.expect("250 2.1.5", "RCPT TO:<r%d@example.com>", i)
		}
		c.expect("452 4.5.3 Too many recipients", "RCPT TO:<r3@example.com>")
	})
}

func TestListener_QuotedLocalPartsStayQuoted(t *testing.T) {
	addr, q := startListener(t, nil)
	c := dialSMTP(t, addr)
	c.expect("250", "EHLO client.test")
	// The sender routes by its domain, contoso.test; the quoted string is
	// its local part and must reach Microsoft as one, never as parameters.
	c.expect("250 2.1.0", `MAIL FROM:<"x@attacker.example> ENVID="@contoso.test>`)
	c.expect("250 2.1.5", `RCPT TO:<"v@example.com> NOTIFY=NEVER ORCPT=rfc822;x"@example.org>`)
	c.expect("250 2.1.5", `RCPT TO:<"john smith"@example.org>`)
	c.expect("250 2.1.5", `RCPT TO:<"john\ smith"@example.org>`)
	c.expect("250 2.1.5", `RCPT TO:<"plain"@example.org>`) // needs no quotes: stored without
	c.expect("553 5.1.3", `RCPT TO:<"a\"b"@example.org>`)
	c.expect("553 5.1.3", `RCPT TO:<"a\\b"@example.org>`)
	c.expect("553 5.1.3", `RCPT TO:<"unterminated@example.org>`)
	c.expect("354", "DATA")
	c.raw("Subject: quoted\r\n\r\nx\r\n.\r\n")
	c.read()
	msgs := q.messages()
	if len(msgs) != 1 {
		t.Fatalf("queued %d messages", len(msgs))
	}
	env := msgs[0].env
	if env.From != `"x@attacker.example> ENVID="@contoso.test` {
		t.Errorf("sender queued as %q", env.From)
	}
	want := []string{`"v@example.com> NOTIFY=NEVER ORCPT=rfc822;x"@example.org`, `"john smith"@example.org`, `"john smith"@example.org`, `plain@example.org`}
	if strings.Join(env.To, "|") != strings.Join(want, "|") {
		t.Errorf("recipients queued as\n%q\nwant\n%q", env.To, want)
	}

	// Routing uses the parsed domain, never an "@domain" inside quotes.
	c.expect("550 5.7.1", `MAIL FROM:<"x@contoso.test"@attacker.example>`)
}

func TestListener_ControlCharactersAndUnannouncedUTF8Refused(t *testing.T) {
	addr, q := startListener(t, nil)
	c := dialSMTP(t, addr)
	c.expect("250", "EHLO client.test")
	for _, from := range []string{
		"a\x00b@contoso.test", "a\x01b@contoso.test", "a\x7fb@contoso.test", "a\tb@contoso.test",
		"a b@contoso.test", "a<b@contoso.test", "a>b@contoso.test", "a\rb@contoso.test",
		"\"a\x00b\"@contoso.test", "\"a\x1bb\"@contoso.test", "a@contoso.test\x00", "a@conto so.test",
		"a@contoso..test", "a@-contoso.test", "@contoso.test", "a@", "a", "a@b@contoso.test",
		"a\xffb@contoso.test",
	} {
		c.expect("501 5.1.7", "MAIL FROM:<%s>", from)
	}
	// RFC 6531 3.5: non-ASCII only with SMTPUTF8 in that MAIL command.
	c.expect("553 5.6.7", "MAIL FROM:<ålerts@contoso.test>")
	c.expect("553 5.6.7", "MAIL FROM:<ålerts@contoso.test> BODY=8BITMIME")
	c.expect("250 2.1.0", "MAIL FROM:<ålerts@contoso.test> SMTPUTF8")
	c.expect("250 2.1.5", "RCPT TO:<пользователь@example.com>")
	c.expect("250 2.1.5", "RCPT TO:<bob@bücher.example>")
	for _, to := range []string{"b\x00c@example.com", "b\x0bc@example.com", "b c@example.com", "b\xffc@example.com", "b\u00a0c@example.com", "b\u2028c@example.com"} {
		c.expect("553 5.1.3", "RCPT TO:<%s>", to)
	}
	c.expect("354", "DATA")
	c.raw("Subject: x\r\n\r\nx\r\n.\r\n")
	c.read()
	c.expect("250 2.1.0", "MAIL FROM:<alerts@contoso.test>")
	c.expect("553 5.6.7", "RCPT TO:<пользователь@example.com>")
	msgs := q.messages()
	if len(msgs) != 1 || msgs[0].env.From != "ålerts@contoso.test" || !msgs[0].env.SMTPUTF8 ||
		strings.Join(msgs[0].env.To, " ") != "пользователь@example.com bob@bücher.example" {
		t.Fatalf("queued %+v", msgs)
	}
}

// sendData runs one transaction on a new connection and sends data as is
// after the 354; it returns the reply and what was queued.
func sendData(t *testing.T, addr string, q *captureQueue, data string) (string, []byte) {
	t.Helper()
	before := len(q.messages())
	c := dialSMTP(t, addr)
	c.expect("250", "EHLO client.test")
	c.expect("250", "MAIL FROM:<a@contoso.test>")
	c.expect("250", "RCPT TO:<b@example.com>")
	c.expect("354", "DATA")
	c.raw(data)
	r := c.read()
	msgs := q.messages()
	if len(msgs) == before {
		return r, nil
	}
	return r, msgs[len(msgs)-1].body
}

func TestListener_DataLineEndsNormalisedAndEndFound(t *testing.T) {
	addr, q := startListener(t, nil)
	for _, tt := range []struct {
		name, sent, stored string
	}{
		// Python's smtplib appends CRLF to a bytes body ending in CR.
		{"body ending in a lone CR", "Subject: x\r\n\r\nlast line\r\r\n.\r\n", "Subject: x\r\n\r\nlast line\r\n\r\n"},
		{"lone CR inside a line", "a\rb\r\n.\r\n", "a\r\nb\r\n"},
		{"lone CR then a dot line", "a\r.\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
		{"dot then a lone CR", "a\r\n.\rX\r\n.\r\n", "a\r\n.\r\nX\r\n"},
		{"bare LF", "a\nb\r\n.\r\n", "a\r\nb\r\n"},
		{"bare LF then a dot line", "a\n.\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
		{"dot then a bare LF", "a\r\n.\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
		{"dot-stuffing after CRLF and after bare LF", "..a\r\nb\n..c\r\n.\r\n", ".a\r\nb\r\n.c\r\n"},
		{"CR CR LF", "a\r\r\nb\r\n.\r\n", "a\r\n\r\nb\r\n"},
		{"empty", ".\r\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, stored := sendData(t, addr, q, tt.sent)
			if !strings.HasPrefix(r, "250 2.0.0") {
				t.Fatalf("reply %q", r)
			}
			if string(stored) != tt.stored {
				t.Errorf("stored %q, want %q", stored, tt.stored)
			}
		})
	}
}

// Only CRLF.CRLF ends the data: a bare LF or lone CR around a dot never
// does, so no command can be smuggled inside a message.
func TestListener_NoSmugglingPastBareLineEnds(t *testing.T) {
	addr, q := startListener(t, nil)
	for _, end := range []string{"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\r.\r"} {
		data := "Subject: x\r\n\r\nx" + end + "MAIL FROM:<evil@contoso.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n"
		r, stored := sendData(t, addr, q, data)
		if !strings.HasPrefix(r, "250 2.0.0") {
			t.Fatalf("%q: reply %q", end, r)
		}
		if !strings.Contains(string(stored), "MAIL FROM:<evil@contoso.test>\r\n") {
			t.Errorf("%q: the smuggled commands are not part of the message: %q", end, stored)
		}
	}
	for _, m := range q.messages() {
		if m.env.From == "evil@contoso.test" {
			t.Error("a smuggled transaction was accepted")
		}
	}
}

func TestListener_LongLineIsPermanentAndSessionGoesOn(t *testing.T) {
	addr, q := startListener(t, nil)
	const limit = 128 << 10
	r, _ := sendData(t, addr, q, "Subject: x\r\n\r\n"+strings.Repeat("x", limit)+"\r\n.\r\n")
	if !strings.HasPrefix(r, "250 2.0.0") {
		t.Fatalf("a line of exactly %d octets: %q", limit, r)
	}
	for _, tt := range []struct{ name, data string }{
		{"header", "Subject: " + strings.Repeat("x", limit) + "\r\n\r\nbody\r\n.\r\n"},
		{"body", "Subject: x\r\n\r\n" + strings.Repeat("x", limit+1) + "\r\nmore\r\n.\r\n"},
		{"body ending without CRLF", "Subject: x\r\n\r\n" + strings.Repeat("x", limit+1) + "\r\n.\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(q.messages())
			c := dialSMTP(t, addr)
			c.expect("250", "EHLO client.test")
			c.expect("250", "MAIL FROM:<a@contoso.test>")
			c.expect("250", "RCPT TO:<b@example.com>")
			c.expect("354", "DATA")
			c.raw(tt.data)
			// Permanent: retrying the same message cannot help.
			if r := c.read(); !strings.HasPrefix(r, "552 5.3.4") || !strings.Contains(r, "131072") {
				t.Fatalf("got %q", r)
			}
			c.expect("250", "RSET")
			c.expect("250", "MAIL FROM:<a@contoso.test>")
			c.expect("250", "RCPT TO:<b@example.com>")
			c.expect("354", "DATA")
			c.raw("Subject: short\r\n\r\nok\r\n.\r\n")
			c.read()
			if msgs := q.messages(); len(msgs) != before+1 || string(msgs[len(msgs)-1].body) != "Subject: short\r\n\r\nok\r\n" {
				t.Fatalf("queued %d messages", len(msgs)-before)
			}
		})
	}
}

// jokes are go-smtp's own reply texts, which clients show to users.
var jokes = []string{"Roger", "I'll make sure", "successfully done nothing", "Go ahead", "Bye", "Session reset",
	"Please introduce yourself", "Was expecting", "Quiting", "bye bye", "sorry"}

func TestListener_StandardRepliesAndSequence(t *testing.T) {
	addr, _ := startListener(t, nil)
	c := dialSMTP(t, addr)
	var replies []string
	exp := func(want, format string, args ...any) {
		t.Helper()
		replies = append(replies, c.expect(want, format, args...))
	}
	exp("503 5.5.1", "MAIL FROM:<a@contoso.test>") // RFC 5321 4.1.4: HELO/EHLO first
	exp("250", "EHLO client.test")
	exp("250 2.0.0 OK", "NOOP")
	exp("252 2.5.0", "VRFY bob")
	exp("503 5.5.1", "RCPT TO:<b@example.com>")
	exp("503 5.5.1", "DATA")
	exp("250 2.1.0", "MAIL FROM:<a@contoso.test>")
	exp("503 5.5.1", "MAIL FROM:<a@contoso.test>") // RFC 5321 3.3: no nested MAIL
	exp("250 2.1.5", "RCPT TO:<b@example.com>")
	exp("250 2.0.0", "RSET")
	exp("503 5.5.1", "RCPT TO:<b@example.com>") // RSET ended the transaction
	exp("555 5.5.4", "MAIL FROM:<a@contoso.test> SMTPUTF8=yes")
	exp("501 5.5.4", "MAIL FROM:<a@contoso.test> BODY")
	exp("555 5.5.4", "MAIL FROM:<a@contoso.test> RET=FULL") // DSN is not offered
	exp("555 5.5.4", "MAIL FROM:<a@contoso.test> X-UNKNOWN=1")
	exp("501 5.5.4", "MAIL FROM:<a@contoso.test> SIZE=10 SIZE=10")
	exp("250 2.1.0", "MAIL FROM:<a@contoso.test> SIZE=10 BODY=8BITMIME SMTPUTF8 AUTH=<>")
	exp("555 5.5.4", "RCPT TO:<b@example.com> NOTIFY=NEVER")
	exp("250 2.0.0", "RSET")
	// After HELO there are no service extensions (RFC 5321 4.1.1.1).
	exp("250", "HELO client.test")
	exp("555 5.5.4", "MAIL FROM:<a@contoso.test> SMTPUTF8")
	exp("555 5.5.4", "MAIL FROM:<a@contoso.test> BODY=8BITMIME")
	exp("250 2.1.0", "MAIL FROM:<a@contoso.test>")
	exp("500 5.5.2", "XYZZY")
	exp("502 5.5.1", "EXPN staff")
	exp("221 2.0.0", "QUIT")
	for _, r := range replies {
		for _, j := range jokes {
			if strings.Contains(r, j) {
				t.Errorf("reply %q is go-smtp's, not a standard one", r)
			}
		}
	}
}

func TestListener_ShutdownEndsIdleSessionsAndLetsDataFinish(t *testing.T) {
	l, addr, q := serveListener(t, nil)
	idle := dialSMTP(t, addr)
	idle.expect("250", "EHLO idle.test")
	busy := dialSMTP(t, addr)
	busy.expect("250", "EHLO busy.test")
	busy.expect("250", "MAIL FROM:<a@contoso.test>")
	busy.expect("250", "RCPT TO:<b@example.com>")
	busy.expect("354", "DATA")
	busy.raw("Subject: in flight\r\n\r\nfirst half\r\n")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), replyWait)
		defer cancel()
		done <- l.Shutdown(ctx)
	}()
	if r := idle.read(); !strings.HasPrefix(r, "421 4.3.2") {
		t.Errorf("idle session told %q", r)
	}
	busy.raw("second half\r\n.\r\n")
	if r := busy.read(); !strings.HasPrefix(r, "250 2.0.0") {
		t.Errorf("message in flight: %q", r)
	}
	if r := busy.cmd("NOOP"); !strings.HasPrefix(r, "421 4.3.2") {
		t.Errorf("after its message, the busy session was told %q", r)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if msgs := q.messages(); len(msgs) != 1 || string(msgs[0].body) != "Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n" {
		t.Errorf("queued %+v", msgs)
	}
}

func TestListener_StartTLSThenAuth(t *testing.T) {
	ca, err := fakem365.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	addr, q := startListener(t, func(c *ListenerConfig) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server}}
		c.Users = map[string][]byte{"app": hash}
		c.AuthRequired = true
	})
	c, err := smtp.DialStartTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered again inside TLS")
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH %v %q", ok, mechs)
	}
	if err := c.Mail("a@contoso.test", nil); err == nil || !strings.Contains(err.Error(), "530") {
		t.Errorf("MAIL before AUTH: %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "app", "pw")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@contoso.test", []string{"b@example.com"}, strings.NewReader("Subject: tls\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	if msgs := q.messages(); len(msgs) != 1 {
		t.Fatalf("queued %d", len(msgs))
	}
}

func TestListener_AuthExchange(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	addr, _ := startListener(t, func(c *ListenerConfig) { c.Users = map[string][]byte{"app": hash} })
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := dialSMTP(t, addr)
	c.expect("503 5.5.1", "AUTH PLAIN %s", b64("\x00app\x00pw")) // EHLO first (RFC 4954)
	c.expect("250", "EHLO client.test")
	c.expect("504 5.7.4", "AUTH CRAM-MD5")
	c.expect("334 "+b64("Username:"), "AUTH LOGIN")
	c.expect("501 5.0.0", "*") // cancelled
	c.expect("501 5.5.2", "AUTH PLAIN not-base64!")
	c.expect("334 "+b64("Username:"), "AUTH LOGIN")
	c.expect("334 "+b64("Password:"), "%s", b64("app"))
	c.expect("235 2.7.0", "%s", b64("pw"))
	c.expect("503 5.5.1", "AUTH PLAIN %s", b64("\x00app\x00pw")) // once per session

	// Guessing passwords ends the session after maxAuthFailures tries.
	g := dialSMTP(t, addr)
	g.expect("250", "EHLO guesser.test")
	for range maxAuthFailures - 1 {
		g.expect("535 5.7.8", "AUTH PLAIN %s", b64("\x00app\x00guess"))
	}
	if r := g.cmd("AUTH PLAIN %s", b64("\x00app\x00guess")); !strings.HasPrefix(r, "535 5.7.8") {
		t.Fatalf("got %q", r)
	}
	if r := g.read(); !strings.HasPrefix(r, "421 4.7.0") {
		t.Errorf("after %d failed AUTH: %q", maxAuthFailures, r)
	}
}
