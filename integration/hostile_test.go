package integration

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"golang.org/x/crypto/bcrypt"
)

// Issue 12, "Hostile clients get nowhere", and issue 13's null sender,
// through the whole relay as `serve` wires it.

// hostileConn is a raw SMTP client that may be hung up on: its replies
// are returned, not required.
type hostileConn struct {
	t    testing.TB
	conn net.Conn
	text *textproto.Conn
}

// dialHostile connects from local (a loopback address; "" for the
// default) and returns the client and its greeting.
func dialHostile(t testing.TB, addr, local string) (*hostileConn, string) {
	t.Helper()
	d := net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &hostileConn{t: t, conn: conn, text: textproto.NewConn(conn)}
	return c, c.reply()
}

// reply reads the next reply as "code text", or "" if the connection ended.
func (c *hostileConn) reply() string {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, err := c.text.ReadResponse(0)
	if code == 0 && err != nil {
		return ""
	}
	return fmt.Sprintf("%d %s", code, msg)
}

// cmd sends line and returns the reply ("" if the connection ended).
func (c *hostileConn) cmd(line string) string {
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.text.PrintfLine("%s", line); err != nil {
		return ""
	}
	return c.reply()
}

func (c *hostileConn) must(want, line string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("%.80q: got %q, want %q…", line, got, want)
	}
	return got
}

// The case: 500 wrong AUTH PLAIN, then the right password, was
// accepted. Now each connection ends after 5 failures, and the address is
// locked out: a guesser reconnecting gets its passwords checked only
// when a lock has ended, the right one is refused during a lock, each
// lock is logged once with the address, and every failed AUTH is counted.
func TestE2E_PasswordGuessingIsCutOffAndLockedOut(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users")
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err := os.WriteFile(users, []byte("app:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *configs.Config) { c.Listen.Auth.UsersFile = users }, daemon.Hooks{})
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	wrong, right := "AUTH PLAIN "+enc("\x00app\x00guess"), "AUTH PLAIN "+enc("\x00app\x00pw")

	replies := map[string]int{}
	conns, attempts := 0, 0
	for attempts < 500 {
		c, _ := dialHostile(t, h.relay.SMTPAddr(), "")
		conns++
		c.must("250", "EHLO guesser.test")
		for {
			got := c.cmd(wrong)
			if got == "" || strings.HasPrefix(got, "421") {
				break
			}
			attempts++
			replies[got[:9]]++
			if got[:9] == "235 2.7.0" {
				t.Fatal("a wrong password was accepted")
			}
		}
		c.conn.Close()
	}
	if conns < 500/5 {
		t.Errorf("500 wrong AUTHs took only %d connections: a connection should end after 5", conns)
	}
	checked := replies["535 5.7.8"]
	if checked < 6 || replies["454 4.7.0"] < 400 {
		t.Errorf("replies %v: want 5 free failures, then a lock refusing nearly all the rest with 454 4.7.0", replies)
	}
	locks := strings.Count(h.logs.String(), "address locked out after failed AUTH")
	if locks != checked-5 {
		t.Errorf("%d lockout log lines for %d checked failures: want one per lock (each checked failure past the 5th)", locks, checked)
	}
	if !strings.Contains(h.logs.String(), "client=127.0.0.1") {
		t.Error("the lockout is not logged with the address")
	}

	c, _ := dialHostile(t, h.relay.SMTPAddr(), "")
	c.must("250", "EHLO guesser.test")
	c.must("454 4.7.0", right) // the lock refuses it unchecked
	if got := scrape(t, h)[`oauthrelay_smtp_rejections_total{reason="auth"}`]; got != 501 {
		t.Errorf(`rejections{reason="auth"} = %v, want every failed AUTH (501)`, got)
	}
}

// One host cannot take every session: with listen.max_sessions 10, the
// default per-client cap is 5; the relay stays ready and another host
// still sends mail.
func TestE2E_OneHostCannotTakeEverySession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Listen.MaxSessions = 10 }, daemon.Hooks{})
	h.connect()
	greetings := map[string]int{}
	for range 10 {
		_, got := dialHostile(t, h.relay.SMTPAddr(), "127.0.0.1")
		greetings[got[:3]]++
		if got[:3] != "220" && got != "421 4.7.0 Too many connections from your address, try again later" {
			t.Errorf("refused with %q", got)
		}
	}
	if greetings["220"] != 5 || greetings["421"] != 5 {
		t.Errorf("10 sessions from one address: %v, want 5 taken and 5 refused", greetings)
	}
	if code, body := api(t, h, "GET", "/readyz", ""); code != 200 {
		t.Errorf("/readyz with one host at its cap: %d %s", code, body)
	}
	other, got := dialHostile(t, h.relay.SMTPAddr(), "127.0.0.2")
	if !strings.HasPrefix(got, "220") {
		t.Fatalf("another host: %q", got)
	}
	other.must("250", "EHLO other.test")
	other.must("250", "MAIL FROM:<"+mailbox+">")
	other.must("250", "RCPT TO:<bob@example.com>")
	other.must("354", "DATA")
	other.conn.Write([]byte(message(1, mailbox, "bob@example.com", "") + ".\r\n"))
	if got := other.reply(); !strings.HasPrefix(got, "250 2.0.0") {
		t.Errorf("another host's message: %q", got)
	}
	if got := scrape(t, h)[`oauthrelay_smtp_rejections_total{reason="client_sessions"}`]; got != 5 {
		t.Errorf(`rejections{reason="client_sessions"} = %v, want 5`, got)
	}
}

// A session cannot be held open by commands that send nothing: NOOP within
// the read timeout kept one forever. Past listen.max_junk_commands (100)
// it ends, and listen.max_session_time ends one that keeps under it.
func TestE2E_NoopsCannotHoldASession(t *testing.T) {
	t.Parallel()
	const lifetime = 2 * time.Second
	h := newHarness(t, func(c *configs.Config) {
		c.Listen.ReadTimeout, c.Listen.MaxSessionTime = 2*time.Second, lifetime
	}, daemon.Hooks{})

	fast, _ := dialHostile(t, h.relay.SMTPAddr(), "")
	fast.must("250", "EHLO idle.test")
	n := 1
	for ; n < 1000; n++ {
		if got := fast.cmd("NOOP"); !strings.HasPrefix(got, "250") {
			if got != "421 4.7.0 relay.test Too many commands without mail; closing connection" {
				t.Errorf("command %d: %q", n+1, got)
			}
			break
		}
	}
	if n != 100 {
		t.Errorf("the session ended at command %d, want after 100 without mail", n+1)
	}

	slow, _ := dialHostile(t, h.relay.SMTPAddr(), "")
	start := time.Now()
	slow.must("250", "EHLO idle.test")
	var got string
	for time.Since(start) < 10*time.Second {
		if got = slow.cmd("NOOP"); !strings.HasPrefix(got, "250") {
			break
		}
		time.Sleep(300 * time.Millisecond) // well within the read timeout
	}
	if !strings.HasPrefix(got, "421 4.7.0 relay.test Session time limit reached") || time.Since(start) < lifetime {
		t.Errorf("after %v: %q, want the session time limit (%v)", time.Since(start), got, lifetime)
	}
	m := scrape(t, h)
	if m[`oauthrelay_smtp_rejections_total{reason="junk_commands"}`] != 1 || m[`oauthrelay_smtp_rejections_total{reason="session_time"}`] != 1 {
		t.Errorf("rejections: junk_commands %v, session_time %v; want 1 each",
			m[`oauthrelay_smtp_rejections_total{reason="junk_commands"}`], m[`oauthrelay_smtp_rejections_total{reason="session_time"}`])
	}
}

// listen.read_timeout bounds each read: a message sent slowly but steadily
// arrives, though it takes several read timeouts. listen.max_data_time
// bounds the whole: a client trickling on is cut off and nothing is
// queued.
func TestE2E_SlowDataArrivesEndlessDataDoesNot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Listen.ReadTimeout, c.Listen.MaxDataTime = 500*time.Millisecond, 3*time.Second
	}, daemon.Hooks{})
	h.connect()
	open := func() *hostileConn {
		c, _ := dialHostile(t, h.relay.SMTPAddr(), "")
		c.must("250", "EHLO slow.test")
		c.must("250", "MAIL FROM:<"+mailbox+">")
		c.must("250", "RCPT TO:<bob@example.com>")
		c.must("354", "DATA")
		return c
	}

	slow := open()
	start := time.Now()
	for _, line := range strings.SplitAfter(message(1, mailbox, "bob@example.com", "slowly\r\n.\r\n"), "\r\n") {
		if line != "" {
			time.Sleep(250 * time.Millisecond)
			slow.conn.Write([]byte(line))
		}
	}
	if got := slow.reply(); !strings.HasPrefix(got, "250 2.0.0") || time.Since(start) < time.Second {
		t.Fatalf("a message sent steadily over %v (read timeout 500ms): %q", time.Since(start), got)
	}
	if msgs := h.fake.SMTP.WaitMessages(1, 20*time.Second); len(msgs) != 1 || !bytes.Contains(msgs[0].Data, []byte("slowly")) {
		t.Fatalf("upstream got %d messages", len(msgs))
	}

	endless := open()
	start = time.Now()
	go func() {
		for time.Since(start) < 10*time.Second {
			endless.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(endless.conn, "more\r\n"); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	got := endless.reply()
	if !strings.HasPrefix(got, "421 4.4.2") || time.Since(start) < 3*time.Second {
		t.Errorf("after %v: %q, want 421 4.4.2 once listen.max_data_time (3s) has passed", time.Since(start), got)
	}
	if st := h.relay.Queue.Stats(); st.Messages != 0 {
		t.Errorf("a message cut off was queued: %+v", st)
	}
	if got := scrape(t, h)[`oauthrelay_smtp_rejections_total{reason="data_time"}`]; got != 1 {
		t.Errorf(`rejections{reason="data_time"} = %v, want 1`, got)
	}
}

// Issue 13: a Postfix satellite's bounces and DSNs come from <>. They are
// accepted, routed by their From: header (else to the first account, or
// listen.null_sender_account), and sent upstream with that account's
// mailbox as envelope sender; they were refused with 550 and lost.
func TestE2E_NullSenderDSNsAreDelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		alerts := c.Accounts[0]
		alerts.Name, alerts.Mailbox, alerts.Senders = "alerts", "alerts@fabrikam.test", []string{"*@fabrikam.test"}
		c.Accounts = append(c.Accounts, alerts)
	}, daemon.Hooks{})
	h.connect()
	connectAccount(t, h, "alerts")

	dsn := func(id int, from string) string {
		return fmt.Sprintf("From: %s\r\nTo: <app@contoso.test>\r\nSubject: Undelivered Mail Returned to Sender\r\n"+
			"X-Test-Id: %d\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"+
			"--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n"+
			"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; satellite.example\r\n\r\n"+
			"Final-Recipient: rfc822; nobody@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--\r\n", from, id)
	}
	for id, from := range map[int]string{
		1: "MAILER-DAEMON@satellite.example (Mail Delivery System)", // no account's senders: the first account
		2: "Mail Delivery System <MAILER-DAEMON@fabrikam.test>",     // alerts' senders
	} {
		s := dialRaw(t, h.relay.SMTPAddr())
		s.expect("250", "EHLO satellite.example")
		s.expect("250 2.1.0", "MAIL FROM:<>")
		s.expect("250", "RCPT TO:<app@contoso.test>")
		s.expect("354", "DATA")
		s.raw(dsn(id, from) + ".\r\n")
		s.expect("250 2.0.0", "")
	}
	msgs := byTestID(h.fake.SMTP.WaitMessages(2, 20*time.Second))
	for id, want := range map[string]string{"1": mailbox, "2": "alerts@fabrikam.test"} {
		m, ok := msgs[id]
		if !ok {
			t.Errorf("DSN %s not delivered upstream", id)
			continue
		}
		if m.From != want || strings.Join(m.To, ",") != "app@contoso.test" {
			t.Errorf("DSN %s went upstream from %q to %q, want from %s", id, m.From, m.To, want)
		}
		if !bytes.Contains(m.Data, []byte("Final-Recipient: rfc822; nobody@example.com\r\n")) {
			t.Errorf("DSN %s arrived without its report:\n%s", id, m.Data)
		}
	}
}

// connectAccount runs the Connect flow of account name, as harness.connect
// does for helpdesk.
func connectAccount(t *testing.T, h *harness, name string) {
	t.Helper()
	resp, err := h.browser().Get("http://" + h.relay.AdminAddr() + "/connect/" + name)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("flows now")) {
		t.Fatalf("connect %s: %d %s", name, resp.StatusCode, body)
	}
}
