package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
)

const mailbox = "helpdesk@contoso.test"

// syncBuffer collects the relay's log output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a fake Microsoft 365 and a relay wired to it, as `serve` wires
// one, on 127.0.0.1 with random ports.
type harness struct {
	t     testing.TB
	fake  *fakem365.M365
	relay *daemon.Relay
	cfg   *configs.Config
	dir   string
	logs  *syncBuffer
	// localPasswords are the inbound users' passwords (never to be logged).
	localPasswords []string
}

// baseConfig is a relay configuration pointing at fake, with short timings.
func baseConfig(t testing.TB, fake *fakem365.M365, dir string) *configs.Config {
	caFile := filepath.Join(dir, "fake-ca.pem")
	if err := fake.WriteCA(caFile); err != nil {
		t.Fatal(err)
	}
	c := configs.Default()
	c.Listen.Addr, c.Admin.Addr = "127.0.0.1:0", "127.0.0.1:0"
	c.Listen.Hostname, c.Upstream.Hostname = "relay.test", "relay.test"
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Keysafe.Path = filepath.Join(dir, "keysafe.bin")
	c.Upstream.Addr, c.Upstream.CAFile = fake.SMTP.Addr, caFile
	c.Delivery.Retry = []time.Duration{200 * time.Millisecond}
	c.Delivery.Jitter = 0
	c.Delivery.RatePerMinute = 0 // pacing off unless a test wants it
	c.Delivery.IdleTimeout = 5 * time.Second
	c.Accounts = []configs.Account{{
		Name: "helpdesk", Tenant: "contoso.test", ClientID: "client-1", Flow: configs.FlowAuthorizationCode,
		Mailbox: mailbox, Senders: []string{"*@contoso.test"}, Authority: fake.Entra.URL,
	}}
	configs.AccountDefaults(&c.Accounts[0])
	return &c
}

func newHarness(t testing.TB, mod func(*configs.Config), hooks daemon.Hooks) *harness {
	t.Helper()
	fake, err := fakem365.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	c := baseConfig(t, fake, dir)
	if mod != nil {
		mod(c)
	}
	if ps := configs.Validate(c); len(ps) > 0 {
		t.Fatal(ps)
	}
	h := &harness{t: t, fake: fake, cfg: c, dir: dir, logs: &syncBuffer{}}
	h.start(hooks)
	t.Cleanup(func() { h.checkLogsHoldNoSecret() })
	return h
}

// start builds and starts a relay on h's configuration and spool.
func (h *harness) start(hooks daemon.Hooks) {
	h.t.Helper()
	smtpLn, err := net.Listen("tcp", h.cfg.Listen.Addr)
	if err != nil {
		h.t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", h.cfg.Admin.Addr)
	if err != nil {
		h.t.Fatal(err)
	}
	c := *h.cfg
	c.Admin.Addr = adminLn.Addr().String()
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	userTune := hooks.TuneTokens
	hooks.TuneTokens = func(o *tokens.Options) {
		o.WatchInterval = 50 * time.Millisecond
		o.TransientRetries = []time.Duration{}
		if userTune != nil {
			userTune(o)
		}
	}
	userUp := hooks.TuneUpstream
	hooks.TuneUpstream = func(u *relay.UpstreamConfig) {
		u.ThrottleBackoff = 200 * time.Millisecond
		if userUp != nil {
			userUp(u)
		}
	}
	r, err := daemon.New(&c, log, hooks)
	if err != nil {
		h.t.Fatal(err)
	}
	if c.Inbound.Enabled() {
		r.UseInboundListeners(h.listenIf(c.Inbound.IMAP.Addr), h.listenIf(c.Inbound.POP3.Addr))
	}
	r.StartWith(smtpLn, adminLn)
	h.relay = r
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Shutdown(ctx)
	})
}

// listenIf listens on addr, or returns nil when addr is "".
func (h *harness) listenIf(addr string) net.Listener {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		h.t.Fatal(err)
	}
	return ln
}

// checkLogsHoldNoSecret fails if any token, code or secret the fake issued
// appears in the relay's log.
func (h *harness) checkLogsHoldNoSecret() {
	logs := h.logs.String()
	secrets := h.fake.Entra.Secrets()
	for _, a := range h.cfg.Accounts {
		secrets = append(secrets, a.ClientSecret)
	}
	secrets = append(secrets, h.localPasswords...)
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			h.t.Errorf("a secret reached the relay's log: %.12s…", s)
		}
	}
}

// connect runs the Connect flow through the relay's admin server, following
// the redirects to the fake Entra ID and back.
func (h *harness) connect() {
	h.t.Helper()
	resp, err := h.browser().Get("http://" + h.relay.AdminAddr() + "/connect/helpdesk")
	if err != nil {
		h.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("flows now")) {
		h.t.Fatalf("connect: %d %s", resp.StatusCode, body)
	}
}

// browser returns an HTTP client logged in to the admin server.
func (h *harness) browser() *http.Client {
	h.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.PostForm("http://"+h.relay.AdminAddr()+"/login", url.Values{"token": {h.relay.AdminToken}})
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/" {
		h.t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return c
}

// message is a test message with a unique X-Test-Id.
func message(id int, from, to, extra string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: test %d\r\nX-Test-Id: %d\r\nMessage-ID: <%d@test>\r\n\r\nbody of %d\r\n%s", from, to, id, id, id, id, extra)
}

// send delivers one message to the relay with a go-smtp client and returns
// the relay's final reply or error.
func send(addr, from string, to []string, body string, opts *smtp.MailOptions) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return sendOn(c, from, to, body, opts)
}

func sendOn(c *smtp.Client, from string, to []string, body string, opts *smtp.MailOptions) (string, error) {
	if err := c.Mail(from, opts); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

var queuedAs = regexp.MustCompile(`queued as ([0-9a-f]{20})`)

// queueID extracts the ID from "2.0.0 OK queued as <id>".
func queueID(t testing.TB, reply string) string {
	t.Helper()
	m := queuedAs.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("reply %q carries no queue ID", reply)
	}
	return m[1]
}

var testID = regexp.MustCompile(`(?m)^X-Test-Id: (\d+)\r?$`)

// byTestID indexes upstream messages by their X-Test-Id header.
func byTestID(msgs []fakem365.Message) map[string]fakem365.Message {
	out := map[string]fakem365.Message{}
	for _, m := range msgs {
		if id := testID.FindSubmatch(m.Data); id != nil {
			out[string(id[1])] = m
		}
	}
	return out
}

// stripReceived removes the relay's Received: field (the first one, with
// its continuation lines).
func stripReceived(data []byte) []byte {
	if !bytes.HasPrefix(data, []byte("Received: ")) {
		return data
	}
	i := bytes.Index(data, []byte("\r\n"))
	for i >= 0 && i+2 < len(data) && (data[i+2] == ' ' || data[i+2] == '\t') {
		j := bytes.Index(data[i+2:], []byte("\r\n"))
		i = i + 2 + j
	}
	return data[i+2:]
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func messageState(r *daemon.Relay, id string) queue.MessageState {
	m, err := r.Queue.Get(id)
	if err != nil {
		return ""
	}
	return m.State
}

var _ = os.Getpid
