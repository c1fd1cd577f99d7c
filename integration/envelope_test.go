package integration

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/queue"
)

// rawSession speaks SMTP to the relay line by line, so a test can send
// what no client library would.
type rawSession struct {
	t    testing.TB
	conn net.Conn
	text *textproto.Conn
}

func dialRaw(t testing.TB, addr string) *rawSession {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &rawSession{t: t, conn: conn, text: textproto.NewConn(conn)}
	s.expect("220", "")
	return s
}

// expect sends line (none if empty) and fails unless the reply, as
// "code text", starts with want. It waits 10 s, far less than the relay's
// read timeout: a reply only a timeout would bring fails the test.
func (s *rawSession) expect(want, line string) string {
	s.t.Helper()
	s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if line != "" {
		if err := s.text.PrintfLine("%s", line); err != nil {
			s.t.Fatal(err)
		}
	}
	code, msg, err := s.text.ReadResponse(0)
	got := fmt.Sprintf("%d %s", code, msg)
	if err != nil || !strings.HasPrefix(got, want) {
		s.t.Fatalf("%.80q: got %q (%v), want %q…", line, got, err, want)
	}
	return got
}

func (s *rawSession) raw(data string) {
	s.t.Helper()
	s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.conn.Write([]byte(data)); err != nil {
		s.t.Fatal(err)
	}
}

// Quoted local parts reach Microsoft quoted: what was inside the quotes is
// never read upstream as MAIL or RCPT parameters (issue 10).
func TestE2E_QuotedAddressesNeverBecomeParameters(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.fake.SMTP.SetSendAsCheck(false)
	h.connect()
	s := dialRaw(t, h.relay.SMTPAddr())
	s.expect("250", "EHLO raw.test")
	s.expect("250", `MAIL FROM:<"x@attacker.example> ENVID="@contoso.test>`)
	s.expect("250", `RCPT TO:<"v@example.com> NOTIFY=NEVER ORCPT=rfc822;x"@example.org>`)
	s.expect("250", `RCPT TO:<"john smith"@example.org>`)
	s.expect("354", "DATA")
	s.raw(message(1, "app@contoso.test", "v@example.org", "") + ".\r\n")
	s.expect("250", "")

	msgs := h.fake.SMTP.WaitMessages(1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("upstream got %d messages", len(msgs))
	}
	m := msgs[0]
	// go-smtp's server gives the local part without its quotes.
	if m.From != "x@attacker.example> ENVID=@contoso.test" || m.MailOptions.EnvelopeID != "" {
		t.Errorf("upstream MAIL: from %q, ENVID %q", m.From, m.MailOptions.EnvelopeID)
	}
	if len(m.To) != 2 || m.To[0] != "v@example.com> NOTIFY=NEVER ORCPT=rfc822;x@example.org" || m.To[1] != "john smith@example.org" {
		t.Errorf("upstream RCPT: %q", m.To)
	}
	for i, o := range m.RcptOptions {
		if len(o.Notify) != 0 || o.OriginalRecipient != "" {
			t.Errorf("recipient %d reached Microsoft with parameters %+v", i, o)
		}
	}
}

// Python's smtplib sends a bytes body ending in CR as "…\r\r\n.\r\n": the
// relay answers at once, and Microsoft gets CRLF line ends only.
func TestE2E_LoneCRLineEndsArriveAsCRLF(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.connect()
	s := dialRaw(t, h.relay.SMTPAddr())
	s.expect("250", "EHLO raw.test")
	s.expect("250", "MAIL FROM:<"+mailbox+">")
	s.expect("250", "RCPT TO:<bob@example.com>")
	s.expect("354", "DATA")
	s.raw("From: <" + mailbox + ">\r\nX-Test-Id: 1\r\n\r\nold Mac line\rx\r.\r\nlast line\r\r\n.\r\n")
	s.expect("250 2.0.0", "")
	msgs := h.fake.SMTP.WaitMessages(1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("upstream got %d messages", len(msgs))
	}
	want := "From: <" + mailbox + ">\r\nX-Test-Id: 1\r\n\r\nold Mac line\r\nx\r\n.\r\nlast line\r\n\r\n"
	if got := string(stripReceived(msgs[0].Data)); got != want {
		t.Errorf("upstream got\n%q\nwant\n%q", got, want)
	}
}

// The case: a hundred recipients of 120,000 octets each. Each is
// refused where it arrives; nothing reaches the spool.
func TestE2E_HugeAddressesRefusedAtTheDoor(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	s := dialRaw(t, h.relay.SMTPAddr())
	s.expect("250", "EHLO raw.test")
	if r := s.expect("501 5.1.7", "MAIL FROM:<"+strings.Repeat("s", 120000)+"@contoso.test>"); !strings.Contains(r, "256 octets") {
		t.Errorf("reply %q does not name the limit", r)
	}
	s.expect("250", "MAIL FROM:<app@contoso.test>")
	for i := range 100 {
		s.expect("553 5.1.3", fmt.Sprintf("RCPT TO:<%d%s@example.com>", i, strings.Repeat("r", 120000)))
	}
	s.expect("554 5.5.1", "DATA")
	s.expect("221", "QUIT")
	if st := h.relay.Queue.Stats(); st.Messages != 0 {
		t.Errorf("queued: %+v", st)
	}
}

// A message queued before the listener checked addresses (or a damaged
// record) cannot put anything but one path into an upstream command; a
// sender that is no address gets no bounce.
func TestE2E_UncheckedQueuedAddressesStayOffTheWire(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.fake.SMTP.SetSendAsCheck(false)
	h.connect()
	enqueue := func(from string, to ...string) string {
		t.Helper()
		id, err := h.relay.Queue.Enqueue(context.Background(), queue.Envelope{From: from, To: to, Account: "helpdesk"},
			strings.NewReader(message(len(to), "app@contoso.test", to[0], "")))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	bad := enqueue("x@attacker.example> ENVID=@contoso.test", "ok@example.com")
	mixed := enqueue("app@contoso.test", "v@example.com> NOTIFY=NEVER", "a\x00b@example.com", "ok@example.com")

	waitFor(t, "both messages finished", 20*time.Second, func() bool {
		return messageState(h.relay, bad) == queue.MsgFailed && messageState(h.relay, mixed) == queue.MsgFailed
	})
	// One message upstream: the mixed one, to its one valid recipient; then
	// its bounce, to app@contoso.test. The bad sender gets no bounce.
	h.fake.SMTP.WaitMessages(2, 20*time.Second)
	time.Sleep(500 * time.Millisecond) // a wrong third message would come now
	msgs := h.fake.SMTP.Messages()
	if len(msgs) != 2 {
		t.Fatalf("upstream got %d messages: %+v", len(msgs), msgs)
	}
	if m := msgs[0]; m.From != "app@contoso.test" || strings.Join(m.To, ",") != "ok@example.com" || m.MailOptions.EnvelopeID != "" {
		t.Errorf("first upstream message: from %q to %q", m.From, m.To)
	}
	if m := msgs[1]; strings.Join(m.To, ",") != "app@contoso.test" || !strings.Contains(string(m.Data), "Final-Recipient: rfc822; a?b@example.com") {
		t.Errorf("bounce: to %q\n%s", m.To, m.Data)
	}
	got, err := h.relay.Queue.Get(bad)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got.Meta.Recipients {
		if r.Last == nil || r.Last.Code != 553 || r.Last.Enhanced != "5.1.7" {
			t.Errorf("recipient of the bad sender: %+v", r.Last)
		}
	}
	if !strings.Contains(h.logs.String(), "no bounce sent") {
		t.Error("the unsent bounce is not logged")
	}
}
