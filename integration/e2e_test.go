// Package integration holds end-to-end tests: real SMTP clients against a
// relay wired as `serve` wires it, with integration/fakem365 as Microsoft 365.
package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
	"golang.org/x/crypto/bcrypt"
)

func wantCode(t *testing.T, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enh {
		t.Fatalf("want %d %v, got %v", code, enh, err)
	}
}

// 1. 200 messages from 20 concurrent clients, mixed content.
func TestE2E_ManyClientsMixedContentArriveIntact(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.fake.SMTP.SetSendAsCheck(false) // senders other than the mailbox: Send As granted
	h.connect()

	big := make([]byte, 7<<20) // base64 of 7 MiB is a ~10 MB attachment
	rand.Read(big)
	b64 := base64.StdEncoding.EncodeToString(big)
	var att strings.Builder
	for i := 0; i < len(b64); i += 76 {
		att.WriteString(b64[i:min(i+76, len(b64))] + "\r\n")
	}
	kinds := []struct {
		name string
		from string
		to   string
		opts *smtp.MailOptions
		body func(id int) string
	}{
		{"8bit", "alerts@contoso.test", "bob@example.com", &smtp.MailOptions{Body: smtp.Body8BitMIME}, func(id int) string {
			return message(id, "alerts@contoso.test", "bob@example.com", "Grüße aus Köln — ünïcödé 8-bit body\r\n")
		}},
		{"smtputf8", "ålerts@contoso.test", "пользователь@example.com", &smtp.MailOptions{UTF8: true}, func(id int) string {
			return strings.Replace(message(id, "ålerts@contoso.test", "пользователь@example.com", "UTF-8 everywhere: 日本語\r\n"), "Subject: test", "Subject: Größe テスト", 1)
		}},
		{"dots", "alerts@contoso.test", "bob@example.com", nil, func(id int) string {
			return message(id, "alerts@contoso.test", "bob@example.com", ".leading dot\r\n..two dots\r\n.\r\n. space\r\n")
		}},
		{"long lines", "alerts@contoso.test", "bob@example.com", nil, func(id int) string {
			return message(id, "alerts@contoso.test", "bob@example.com", strings.Repeat("x", 5000)+"\r\n"+strings.Repeat("y", 998)+"\r\n")
		}},
	}

	const clients, perClient = 20, 10
	sent := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := smtp.Dial(h.relay.SMTPAddr())
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			for i := range perClient {
				id := c*perClient + i
				k := kinds[id%len(kinds)]
				body := k.body(id)
				if id == 7 { // one message with a 10 MB attachment
					body = message(id, k.from, k.to, "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"+att.String()+"--b--\r\n")
				}
				if _, err := sendOn(cl, k.from, []string{k.to}, body, k.opts); err != nil {
					errs <- fmt.Errorf("%s message %d: %w", k.name, id, err)
					return
				}
				mu.Lock()
				sent[strconv.Itoa(id)] = body
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// One more, sent raw with bare LF line ends: it goes upstream as CRLF.
	bare := "From: <alerts@contoso.test>\nTo: <bob@example.com>\nSubject: bare LF\nX-Test-Id: 9999\n\nline one\nline two\n"
	if err := rawSend(h.relay.SMTPAddr(), "alerts@contoso.test", "bob@example.com", bare); err != nil {
		t.Fatal(err)
	}
	// The body's last bare LF is followed by the CRLF of CRLF.CRLF, which
	// belongs to the data (RFC 5321 4.1.1.4): one empty line more.
	sent["9999"] = strings.ReplaceAll(bare, "\n", "\r\n") + "\r\n"

	msgs := byTestID(h.fake.SMTP.WaitMessages(clients*perClient+1, 60*time.Second))
	if len(msgs) != len(sent) {
		t.Fatalf("upstream holds %d distinct messages, want %d", len(msgs), len(sent))
	}
	for id, body := range sent {
		got := stripReceived(msgs[id].Data)
		if !bytes.Equal(got, []byte(body)) {
			t.Errorf("message %s differs upstream (len %d vs %d)", id, len(got), len(body))
		}
		if !bytes.HasPrefix(msgs[id].Data, []byte("Received: from ")) {
			t.Errorf("message %s has no Received: header first", id)
		}
	}
	for _, m := range msgs {
		if strings.Contains(m.From, "å") && !m.UTF8 {
			t.Error("an SMTPUTF8 message went upstream without SMTPUTF8")
		}
	}
	conns := h.fake.SMTP.Connections()
	t.Logf("%d messages over %d upstream connections", len(msgs), conns)
	if conns > len(msgs)/10 {
		t.Errorf("%d upstream connections for %d messages: connections are not reused", conns, len(msgs))
	}
}

// rawSend speaks SMTP by hand so the body keeps its bare LF line ends.
func rawSend(addr, from, to, body string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	read := func() (string, error) {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		return string(buf[:n]), err
	}
	if _, err := read(); err != nil {
		return err
	}
	for _, cmd := range []string{"EHLO raw.test", "MAIL FROM:<" + from + ">", "RCPT TO:<" + to + ">", "DATA"} {
		fmt.Fprintf(conn, "%s\r\n", cmd)
		if _, err := read(); err != nil {
			return err
		}
	}
	fmt.Fprint(conn, body+"\r\n.\r\n")
	reply, err := read()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(reply, "250") {
		return fmt.Errorf("raw DATA: %s", reply)
	}
	return nil
}

// 2. Access tokens living 2 s during a 20 s run.
func TestE2E_ShortLivedTokensDuringLongRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.fake.Entra.SetAccessTokenLifetime(2 * time.Second)
	h.connect()
	before := h.fake.Entra.Requests(fakem365.GrantRefreshToken)
	const n = 100
	for i := range n {
		if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(i, mailbox, "bob@example.com", ""), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // 100 × 200 ms = 20 s
	}
	if got := len(byTestID(h.fake.SMTP.WaitMessages(n, 30*time.Second))); got != n {
		t.Fatalf("delivered %d of %d", got, n)
	}
	reqs := h.fake.Entra.Requests(fakem365.GrantRefreshToken) - before
	t.Logf("20 s run with 2 s tokens: %d token requests for %d messages", reqs, n)
	if reqs < 5 || reqs > 30 {
		t.Errorf("%d token requests: want about one per token lifetime (~17), not one per message", reqs)
	}
}

// 3. Upstream answers 451 twice, then accepts.
func TestE2E_TemporaryFailuresRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Delivery.Retry = []time.Duration{400 * time.Millisecond} }, daemon.Hooks{})
	h.connect()
	h.fake.SMTP.FailNext(fakem365.StageData, fakem365.ReplyTempFailure, fakem365.ReplyTempFailure)
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	var seen queue.Message
	waitFor(t, "a deferred attempt with the upstream reply in meta", 10*time.Second, func() bool {
		m, err := h.relay.Queue.Get(id)
		if err == nil && m.State == queue.MsgDeferred && m.Recipients[0].Last != nil {
			seen = m
			return true
		}
		return false
	})
	if last := seen.Recipients[0].Last; last.Code != 451 || last.Enhanced != "4.7.500" || seen.Recipients[0].State != queue.StateDeferred {
		t.Errorf("meta after a 451: %+v", seen.Recipients[0])
	}
	if len(h.fake.SMTP.WaitMessages(1, 10*time.Second)) != 1 {
		t.Fatal("not delivered after the retries")
	}
	waitFor(t, "message gone from the queue", 5*time.Second, func() bool { return messageState(h.relay, id) == "" })
}

// 4. 554 5.2.252 SendAsDenied: the sender gets a DSN; the message sits in failed/.
func TestE2E_SendAsDeniedBouncesToSender(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.connect()
	const app = "app@contoso.test"
	reply, err := send(h.relay.SMTPAddr(), app, []string{"bob@example.com"}, message(1, app, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	msgs := h.fake.SMTP.WaitMessages(1, 10*time.Second)
	if len(msgs) != 1 {
		t.Fatal("no DSN reached the fake Microsoft 365")
	}
	dsn := msgs[0]
	if dsn.From != mailbox || len(dsn.To) != 1 || dsn.To[0] != app {
		t.Fatalf("DSN envelope %s -> %v", dsn.From, dsn.To)
	}
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Status: 5.2.252", "Action: failed",
		"Diagnostic-Code: smtp; 554 5.2.252 SendAsDenied", "Final-Recipient: rfc822; bob@example.com",
		"may not send as app@contoso.test", "X-Test-Id: 1", "Auto-Submitted: auto-replied"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	waitFor(t, "message in failed/", 5*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgFailed })
	if _, err := os.Stat(filepath.Join(h.cfg.Spool.Dir, "failed", id+".eml")); err != nil {
		t.Error("failed message body not kept in failed/")
	}
}

// 5. Refresh token revoked: account paused with a reconnect explanation,
// nothing bounced; reconnect with the device flow delivers at once.
func TestE2E_RevokedGrantPausesUntilReconnect(t *testing.T) {
	t.Parallel()
	alerts := make(chan map[string]any, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a map[string]any
		json.NewDecoder(r.Body).Decode(&a)
		alerts <- a
	}))
	defer hook.Close()
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.Retry = []time.Duration{time.Hour} // only a resume can deliver in time
		c.Delivery.MessagesPerConnection = 1          // every message signs in anew
		c.Alert.WebhookURL = hook.URL
	}, daemon.Hooks{})
	h.connect()
	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	h.fake.SMTP.WaitMessages(1, 10*time.Second)

	h.fake.Entra.RevokeAll() // a password reset
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(2, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "account paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })
	reason, _ := h.relay.Queue.Paused("helpdesk")
	if !strings.Contains(reason, "AADSTS50173") || !strings.Contains(reason, "press Connect") {
		t.Errorf("pause reason %q should explain the revocation and say to reconnect", reason)
	}
	if st := h.relay.Tokens.State("helpdesk"); st.State != tokens.NeedsReconnect {
		t.Errorf("account state %s", st.State)
	}
	if m, _ := h.relay.Queue.Get(id); m.Attempts != 0 {
		t.Errorf("a paused message used %d attempts", m.Attempts)
	}
	if n := len(h.fake.SMTP.Messages()); n != 1 {
		t.Fatalf("upstream holds %d messages: a pause must not bounce", n)
	}

	_, err = h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(dc tokens.DeviceCode) {
		h.fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := byTestID(h.fake.SMTP.WaitMessages(2, 10*time.Second)); got["2"].Data == nil {
		t.Fatal("queued mail not delivered after reconnecting")
	}
	// The webhook heard about the trouble (with the Connect link) and the recovery.
	// First connect, then the trouble, then the recovery, in that order.
	var states []string
	deadline := time.After(5 * time.Second)
	for len(states) < 3 {
		select {
		case a := <-alerts:
			states = append(states, a["state"].(string))
			if a["state"] == "needs_reconnect" && !strings.HasSuffix(a["connect_url"].(string), "/connect/helpdesk") {
				t.Errorf("alert without the Connect link: %v", a)
			}
		case <-deadline:
			t.Fatalf("webhook got %v, want connected, needs_reconnect, connected", states)
		}
	}
	if strings.Join(states, ",") != "connected,needs_reconnect,connected" {
		t.Errorf("webhook states %v", states)
	}
}

// 7. Refused at the door: each the documented reply, nothing queued.
func TestE2E_RefusedWithDocumentedReplies(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users")
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	os.WriteFile(users, []byte("app:"+string(hash)+"\n"), 0o600)
	h := newHarness(t, func(c *configs.Config) {
		c.Listen.AllowedNetworks = []string{"127.0.0.1/32"}
		c.Listen.MaxMessageBytes = 2048
		c.Listen.MaxRecipients = 3
	}, daemon.Hooks{})
	addr := h.relay.SMTPAddr()

	t.Run("source outside allowed_networks", func(t *testing.T) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		conn, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, _ := conn.Read(buf)
		if !strings.HasPrefix(string(buf[:n]), "554 5.7.1 ") {
			t.Fatalf("got %q", buf[:n])
		}
		if _, err := conn.Read(buf); err == nil {
			t.Error("connection not closed after 554")
		}
	})
	t.Run("unrouted sender", func(t *testing.T) {
		_, err := send(addr, "ceo@fabrikam.test", []string{"bob@example.com"}, "x\r\n", nil)
		wantCode(t, err, 550, smtp.EnhancedCode{5, 7, 1})
		if !strings.Contains(err.Error(), "no account routes it") {
			t.Error(err)
		}
	})
	t.Run("oversize", func(t *testing.T) {
		_, err := send(addr, mailbox, []string{"bob@example.com"}, strings.Repeat("x", 4000)+"\r\n", nil)
		wantCode(t, err, 552, smtp.EnhancedCode{5, 3, 4})
		_, err = send(addr, mailbox, []string{"bob@example.com"}, "x\r\n", &smtp.MailOptions{Size: 10000})
		wantCode(t, err, 552, smtp.EnhancedCode{5, 3, 4})
	})
	t.Run("too many recipients", func(t *testing.T) {
		_, err := send(addr, mailbox, []string{"a@x.test", "b@x.test", "c@x.test", "d@x.test"}, "x\r\n", nil)
		wantCode(t, err, 452, smtp.EnhancedCode{4, 5, 3})
	})
	if st := h.relay.Queue.Stats(); st.Messages != 0 {
		t.Errorf("refused mail was queued: %+v", st)
	}

	h2 := newHarness(t, func(c *configs.Config) { c.Listen.Auth.UsersFile, c.Listen.Auth.Required = users, true }, daemon.Hooks{})
	t.Run("auth required but missing", func(t *testing.T) {
		_, err := send(h2.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, "x\r\n", nil)
		wantCode(t, err, 530, smtp.EnhancedCode{5, 7, 0})
	})
	t.Run("auth given", func(t *testing.T) {
		c, err := smtp.Dial(h2.relay.SMTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl2Plain("app", "wrong")); err == nil {
			t.Fatal("wrong password accepted")
		}
		c2, _ := smtp.Dial(h2.relay.SMTPAddr())
		defer c2.Close()
		if err := c2.Auth(sasl2Plain("app", "pw")); err != nil {
			t.Fatal(err)
		}
		if _, err := sendOn(c2, mailbox, []string{"bob@example.com"}, "x\r\n", nil); err != nil {
			t.Fatal(err)
		}
	})
	if st := h2.relay.Queue.Stats(); st.Messages > 1 {
		t.Errorf("refused mail was queued: %+v", st)
	}
}

// 8. Throttling: 421 4.4.2 past N messages a window; all delivered later,
// nothing bounced.
func TestE2E_ThrottlingDelaysNeverBounces(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.fake.SMTP.SetRatePerMinute(5)
	h.fake.SMTP.SetRateWindow(time.Second)
	h.connect()
	const n = 25
	for i := range n {
		if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(i, mailbox, "bob@example.com", ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	msgs := h.fake.SMTP.WaitMessages(n, 60*time.Second)
	if got := len(byTestID(msgs)); got != n {
		t.Fatalf("delivered %d of %d", got, n)
	}
	for _, m := range msgs {
		if bytes.Contains(m.Data, []byte("delivery-status")) {
			t.Fatal("throttling caused a bounce")
		}
	}
	if !strings.Contains(h.logs.String(), "throttling the account") {
		t.Error("throttling did not happen or was not logged")
	}
}

type plainAuth struct{ user, pass string }

func sasl2Plain(user, pass string) *plainAuth { return &plainAuth{user, pass} }

func (p *plainAuth) Start() (string, []byte, error) {
	return "PLAIN", []byte("\x00" + p.user + "\x00" + p.pass), nil
}
func (p *plainAuth) Next([]byte) ([]byte, error) { return nil, errors.New("unexpected challenge") }

// rewrite_sender: the mailbox sends as itself, so Microsoft's SendAsDenied
// check passes; the application's address stays reachable in Reply-To.
func TestE2E_RewriteSenderAvoidsSendAsDenied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Accounts[0].RewriteSender = configs.RewriteFrom }, daemon.Hooks{})
	h.connect()
	const app = "app@contoso.test"
	if _, err := send(h.relay.SMTPAddr(), app, []string{"bob@example.com"}, message(1, app, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	msgs := h.fake.SMTP.WaitMessages(1, 10*time.Second)
	if len(msgs) != 1 || msgs[0].From != mailbox {
		t.Fatalf("upstream: %+v", msgs)
	}
	data := string(msgs[0].Data)
	if !strings.Contains(data, "\r\nFrom: "+mailbox+"\r\nReply-To: <"+app+">\r\n") || strings.Contains(data, "From: <"+app+">") {
		t.Errorf("headers not rewritten:\n%s", data)
	}
}
