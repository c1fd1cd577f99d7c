package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// These tests deliver through Upstream to a scripted go-smtp server on
// 127.0.0.1:0 that answers AUTH, MAIL, RCPT and DATA as each case says,
// and look at the queue.Result: what each recipient's reply means (README
// "Retry policy" and "Troubleshooting") and which hints the queue gets.

// upstreamScript says how the fake upstream answers. The nth AUTH gets
// auth[n], the nth MAIL mail[n]; nil or past the end: accepted.
type upstreamScript struct {
	auth       []*smtp.SMTPError
	mail       []*smtp.SMTPError
	rcpt       map[string]*smtp.SMTPError // by recipient address
	data       *smtp.SMTPError
	ehlo       *smtp.SMTPError // answers EHLO (go-smtp makes a new session there)
	dropInData bool            // close the connection while the body is read
	stallMail  bool            // never answer MAIL (until the test ends)
}

func smtpErr(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
}

// scriptedUpstream is a go-smtp server playing Microsoft 365.
type scriptedUpstream struct {
	addr    string
	script  upstreamScript
	release chan struct{} // closed when the test ends: frees a stalled session

	mu       sync.Mutex
	sessions int
	auths    []string // the SASL initial responses, in order
	mails    int
	froms    []string // MAIL FROM paths, in order
	rsets    int
	bodies   []string
}

func startScriptedUpstream(t *testing.T, script upstreamScript, tlsCfg *tls.Config) *scriptedUpstream {
	t.Helper()
	up := &scriptedUpstream{script: script, release: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		if script.ehlo != nil {
			return nil, script.ehlo
		}
		up.mu.Lock()
		up.sessions++
		up.mu.Unlock()
		return &scriptedSession{up: up, conn: c}, nil
	}))
	srv.Domain = "fake-m365.test"
	srv.AllowInsecureAuth = tlsCfg == nil
	srv.TLSConfig = tlsCfg
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(func() { close(up.release) }) // runs first
	up.addr = ln.Addr().String()
	return up
}

func (up *scriptedUpstream) counts() (sessions int, auths []string, mails, rsets int, bodies []string) {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.sessions, slices.Clone(up.auths), up.mails, up.rsets, slices.Clone(up.bodies)
}

type scriptedSession struct {
	up     *scriptedUpstream
	conn   *smtp.Conn
	authed bool
}

type saslServerFunc func(response []byte) ([]byte, bool, error)

func (f saslServerFunc) Next(response []byte) ([]byte, bool, error) { return f(response) }

func (s *scriptedSession) AuthMechanisms() []string { return []string{"XOAUTH2"} }

func (s *scriptedSession) Auth(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return saslServerFunc(func(resp []byte) ([]byte, bool, error) {
		up := s.up
		up.mu.Lock()
		n := len(up.auths)
		up.auths = append(up.auths, string(resp))
		up.mu.Unlock()
		if n < len(up.script.auth) && up.script.auth[n] != nil {
			return nil, false, up.script.auth[n]
		}
		s.authed = true
		return nil, true, nil
	}), nil
}

func (s *scriptedSession) Mail(from string, _ *smtp.MailOptions) error {
	up := s.up
	if !s.authed {
		return smtpErr(530, smtp.EnhancedCode{5, 7, 57}, "Client not authenticated to send mail")
	}
	if up.script.stallMail {
		<-up.release
		return smtpErr(451, smtp.EnhancedCode{4, 0, 0}, "too late")
	}
	up.mu.Lock()
	n := up.mails
	up.mails++
	up.froms = append(up.froms, from)
	up.mu.Unlock()
	if n < len(up.script.mail) && up.script.mail[n] != nil {
		return up.script.mail[n]
	}
	return nil
}

func (s *scriptedSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if e := s.up.script.rcpt[to]; e != nil {
		return e
	}
	return nil
}

func (s *scriptedSession) Data(r io.Reader) error {
	up := s.up
	if up.script.dropInData {
		io.ReadFull(r, make([]byte, 8))
		s.conn.Conn().Close()
		io.Copy(io.Discard, r)
		return errors.New("dropped")
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if up.script.data != nil {
		return up.script.data
	}
	up.mu.Lock()
	up.bodies = append(up.bodies, string(b))
	up.mu.Unlock()
	return nil
}

func (s *scriptedSession) Reset() {
	s.up.mu.Lock()
	s.up.rsets++
	s.up.mu.Unlock()
}

func (s *scriptedSession) Logout() error { return nil }

// fakeTokens is a TokenSource that records what delivery asks of it. Each
// Invalidate makes the next token a fresh one ("token-2", …).
type fakeTokens struct {
	authErr   error
	authPanic bool // Auth panics (a bug in delivery)
	grants    tokens.Grants
	grantsErr error

	mu          sync.Mutex
	generation  int
	authCalls   int
	invalidated int
	refused     []string // "535 5.7.3", as SMTPAuthRefused was told
}

func (f *fakeTokens) Auth(_ context.Context, account string) (tokens.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authCalls++
	if f.authPanic {
		panic("fake bug")
	}
	if f.authErr != nil {
		return tokens.Credential{}, f.authErr
	}
	tok := fmt.Sprintf("token-%d", f.generation+1)
	return tokens.Credential{SASL: &tokens.XOAuth2{User: account + "@contoso.test", Token: tok},
		Expiry: time.Now().Add(time.Hour), Fingerprint: "fp-" + tok}, nil
}

// Credential is Auth for the check and Try again (the fake keeps no state).
func (f *fakeTokens) Credential(ctx context.Context, account string) (tokens.Credential, error) {
	return f.Auth(ctx, account)
}

func (f *fakeTokens) Grants(context.Context, string) (tokens.Grants, error) {
	return f.grants, f.grantsErr
}

func (f *fakeTokens) Invalidate(string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.generation++
	f.invalidated++
}

func (f *fakeTokens) SMTPAuthRefused(account string, code int, enhanced string) tokens.Explanation {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := fmt.Sprintf("%d %s", code, enhanced)
	f.refused = append(f.refused, c)
	return tokens.Explanation{Code: c, Title: "Microsoft refused the login of " + account, Action: "fix it"}
}

func (f *fakeTokens) calls() (auth, invalidated int, refused []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authCalls, f.invalidated, slices.Clone(f.refused)
}

const testMessage = "From: app@contoso.test\r\nTo: a@fabrikam.test\r\nSubject: test\r\n\r\nhello\r\n"

func testUpstreamConfig(addr string) UpstreamConfig {
	return UpstreamConfig{Addr: addr, TLS: "none", InsecureAllowPlaintext: true, Hostname: "relay.test",
		Connections: 3, IdleTimeout: time.Minute, DialTimeout: 5 * time.Second, CommandTimeout: 10 * time.Second,
		ThrottleBackoff: time.Minute, ThrottleRecovery: time.Hour}
}

// deliveryHarness runs a real queue whose Deliverer is up: a message
// enqueued is attempted at once, and each attempt's Result comes out of
// results. Retries and probes are an hour away, so each message is
// attempted once during a test.
type deliveryHarness struct {
	q       *queue.Queue
	results chan queue.Result
}

func newDeliveryHarness(t *testing.T, up *Upstream) *deliveryHarness {
	t.Helper()
	h := &deliveryHarness{results: make(chan queue.Result, 16)}
	q, err := queue.Open(queue.Options{
		Dir: t.TempDir(),
		Deliverer: queue.DelivererFunc(func(ctx context.Context, d *queue.Delivery) queue.Result {
			res := up.Deliver(ctx, d)
			h.results <- res
			return res
		}),
		Retry:       queue.RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour},
		ProbeMin:    time.Hour,
		ProbeMax:    time.Hour,
		DiskReserve: -1,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		q.Close(ctx)
	})
	h.q = q
	return h
}

// send enqueues a message to to and returns the result of its attempt.
func (h *deliveryHarness) send(t *testing.T, to ...string) queue.Result {
	t.Helper()
	return h.sendEnvelope(t, queue.Envelope{From: "app@contoso.test", To: to, Account: "helpdesk"})
}

func (h *deliveryHarness) sendEnvelope(t *testing.T, env queue.Envelope) queue.Result {
	t.Helper()
	if _, err := h.q.Enqueue(context.Background(), env, strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-h.results:
		return res
	case <-time.After(30 * time.Second): // a hang, not a wait: every case answers at once
		t.Fatal("no delivery attempt within 30 s")
		return queue.Result{}
	}
}

func newTestUpstream(t *testing.T, cfg UpstreamConfig, ts TokenSource, events UpstreamEvents) *Upstream {
	t.Helper()
	return newTestUpstreamRewriting(t, cfg, ts, events, "off")
}

func newTestUpstreamRewriting(t *testing.T, cfg UpstreamConfig, ts TokenSource, events UpstreamEvents, rewrite string) *Upstream {
	t.Helper()
	up := NewUpstream(cfg, []UpstreamAccount{{Name: "helpdesk", Mailbox: "helpdesk@contoso.test", Rewrite: rewrite}},
		ts, slog.New(slog.DiscardHandler), events)
	t.Cleanup(up.Close)
	return up
}

// refusedAddr is an address on 127.0.0.1 where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// greetAndHangUp serves a server that answers every connection with line
// instead of a 220 greeting and closes it.
func greetAndHangUp(t *testing.T, line string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, line)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

type rcptWant struct {
	outcome  queue.Outcome
	code     int
	enhanced string
	text     string // contained in the reply's text, if set
}

func TestUpstream_RepliesClassified(t *testing.T) {
	ca, err := fakem365.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Server}}
	const a, b = "a@fabrikam.test", "nobody@fabrikam.test"

	tests := []struct {
		name   string
		script upstreamScript
		// server: "" a scripted go-smtp server; "tls" the same with
		// STARTTLS; "refused" nothing listens; "greet421" a 421 greeting.
		server  string
		cfg     func(*UpstreamConfig)
		authErr error // from the TokenSource's Auth
		to      []string

		want            map[string]rcptWant
		wantPause       string // prefix of Result.PauseAccount
		wantUnreachable string // contained in Result.Unreachable
		wantThrottled   bool   // RetryAfter = ThrottleBackoff, Concurrency = Connections-1
		wantAuths       int    // AUTH commands the server saw
		wantInvalidated int
		wantRefused     []string
		wantDelivered   bool // the server holds the body
	}{
		{
			name: "250 delivered",
			want: map[string]rcptWant{a: {queue.Delivered, 250, "2.0.0", ""}}, wantAuths: 1, wantDelivered: true,
		},
		{
			name:   "554 5.2.252 SendAsDenied at MAIL fails",
			script: upstreamScript{mail: []*smtp.SMTPError{smtpErr(554, smtp.EnhancedCode{5, 2, 252}, "SendAsDenied; helpdesk@contoso.test not allowed to send as app@contoso.test")}},
			want:   map[string]rcptWant{a: {queue.Failed, 554, "5.2.252", "SendAsDenied"}}, wantAuths: 1,
		},
		{
			name:   "550 5.1.1 at RCPT fails",
			script: upstreamScript{rcpt: map[string]*smtp.SMTPError{a: smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "RESOLVER.ADR.RecipNotFound; not found")}},
			want:   map[string]rcptWant{a: {queue.Failed, 550, "5.1.1", "RecipNotFound"}}, wantAuths: 1,
		},
		{
			name:   "552 5.3.4 at DATA fails",
			script: upstreamScript{data: smtpErr(552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed maximum message size")},
			want:   map[string]rcptWant{a: {queue.Failed, 552, "5.3.4", "size"}}, wantAuths: 1,
		},
		{
			name:   "451 4.7.500 at MAIL is deferred",
			script: upstreamScript{mail: []*smtp.SMTPError{smtpErr(451, smtp.EnhancedCode{4, 7, 500}, "Server busy. Please try again later")}},
			want:   map[string]rcptWant{a: {queue.Deferred, 451, "4.7.500", "Server busy"}}, wantAuths: 1,
		},
		{
			name:   "452 4.5.3 at RCPT is deferred",
			script: upstreamScript{rcpt: map[string]*smtp.SMTPError{a: smtpErr(452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients")}},
			want:   map[string]rcptWant{a: {queue.Deferred, 452, "4.5.3", ""}}, wantAuths: 1,
		},
		{
			name:          "421 4.4.2 rate exceeded at MAIL: deferred, slower",
			script:        upstreamScript{mail: []*smtp.SMTPError{smtpErr(421, smtp.EnhancedCode{4, 4, 2}, "Message submission rate for this client has exceeded the configured limit")}},
			want:          map[string]rcptWant{a: {queue.Deferred, 421, "4.4.2", "rate"}},
			wantThrottled: true, wantAuths: 1,
		},
		{
			name:          "432 4.3.2 thread limit at RCPT: deferred, slower",
			script:        upstreamScript{rcpt: map[string]*smtp.SMTPError{a: smtpErr(432, smtp.EnhancedCode{4, 3, 2}, "STOREDRV.ClientSubmit; sender thread limit exceeded")}},
			want:          map[string]rcptWant{a: {queue.Deferred, 432, "4.3.2", "thread limit"}},
			wantThrottled: true, wantAuths: 1,
		},
		{
			name:          "432 4.3.2 thread limit at DATA: deferred, slower",
			script:        upstreamScript{data: smtpErr(432, smtp.EnhancedCode{4, 3, 2}, "STOREDRV.ClientSubmit; sender thread limit exceeded")},
			want:          map[string]rcptWant{a: {queue.Deferred, 432, "4.3.2", "thread limit"}},
			wantThrottled: true, wantAuths: 1,
		},
		{
			name:      "530 5.7.57 at MAIL is the session's lost login: deferred, not bounced",
			script:    upstreamScript{mail: []*smtp.SMTPError{smtpErr(530, smtp.EnhancedCode{5, 7, 57}, "Client not authenticated to send mail")}},
			want:      map[string]rcptWant{a: {queue.Deferred, 530, "5.7.57", ""}},
			wantAuths: 1,
		},
		{
			name:      "550 5.2.251 sender throttled is the mailbox's: deferred with the back-off, not bounced",
			script:    upstreamScript{mail: []*smtp.SMTPError{smtpErr(550, smtp.EnhancedCode{5, 2, 251}, "Sender throttled due to continuous invalid recipients errors")}},
			want:      map[string]rcptWant{a: {queue.Deferred, 550, "5.2.251", "Sender throttled"}},
			wantAuths: 1, wantThrottled: true,
		},
		{
			name:      "550 5.4.5 daily sending quota (Gmail) at DATA: deferred with the back-off, not bounced",
			script:    upstreamScript{data: smtpErr(550, smtp.EnhancedCode{5, 4, 5}, "Daily user sending limit exceeded.")},
			want:      map[string]rcptWant{a: {queue.Deferred, 550, "5.4.5", "Daily user sending limit"}},
			wantAuths: 1, wantThrottled: true,
		},
		{
			name: "535 5.7.3 twice: one fresh token, then the account is paused",
			script: upstreamScript{auth: []*smtp.SMTPError{
				smtpErr(535, smtp.EnhancedCode{5, 7, 3}, "Authentication unsuccessful"),
				smtpErr(535, smtp.EnhancedCode{5, 7, 3}, "Authentication unsuccessful"),
			}},
			wantPause: "535 5.7.3: ", wantAuths: 2, wantInvalidated: 1, wantRefused: []string{"535 5.7.3"},
		},
		{
			name:      "535 5.7.3 once: the fresh token is taken",
			script:    upstreamScript{auth: []*smtp.SMTPError{smtpErr(535, smtp.EnhancedCode{5, 7, 3}, "Authentication unsuccessful")}},
			want:      map[string]rcptWant{a: {queue.Delivered, 250, "2.0.0", ""}},
			wantAuths: 2, wantInvalidated: 1, wantDelivered: true,
		},
		{
			name:      "535 5.7.139 SMTP AUTH disabled: paused at once, no retry",
			script:    upstreamScript{auth: []*smtp.SMTPError{smtpErr(535, smtp.EnhancedCode{5, 7, 139}, "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox")}},
			wantPause: "535 5.7.139: ", wantAuths: 1, wantRefused: []string{"535 5.7.139"},
		},
		{
			name:      "454 4.7.0 at AUTH (temporary) is deferred",
			script:    upstreamScript{auth: []*smtp.SMTPError{smtpErr(454, smtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure")}},
			want:      map[string]rcptWant{a: {queue.Deferred, 454, "4.7.0", ""}},
			wantAuths: 1,
		},
		{
			name: "token refused by Entra: paused, Microsoft never sees a login",
			authErr: &tokens.AccountError{Account: "helpdesk", State: tokens.NeedsReconnect,
				Explanation: tokens.Explanation{Code: "AADSTS70008", Title: "the sign-in expired"}},
			wantPause: "AADSTS70008: the sign-in expired",
		},
		{
			name:    "no token yet (Entra unreachable) is deferred",
			authErr: fmt.Errorf("token endpoint: %w", tokens.ErrTransient),
			want:    map[string]rcptWant{a: {queue.Deferred, 451, "4.7.0", "no access token yet"}},
		},
		{
			name:            "connection refused: upstream unreachable",
			server:          "refused",
			wantUnreachable: "cannot connect to",
		},
		{
			name:            "421 at the greeting: upstream unreachable",
			server:          "greet421",
			wantUnreachable: "421 4.3.2 Service not available",
		},
		{
			name:   "554 at EHLO is deferred, not bounced",
			script: upstreamScript{ehlo: smtpErr(554, smtp.EnhancedCode{5, 7, 1}, "Access denied")},
			want:   map[string]rcptWant{a: {queue.Deferred, 554, "5.7.1", "Access denied"}},
		},
		{
			name:   "mixed recipients: 550 for one, the other delivered",
			script: upstreamScript{rcpt: map[string]*smtp.SMTPError{b: smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "RESOLVER.ADR.RecipNotFound; not found")}},
			to:     []string{a, b},
			want: map[string]rcptWant{
				a: {queue.Delivered, 250, "2.0.0", ""},
				b: {queue.Failed, 550, "5.1.1", "RecipNotFound"},
			},
			wantAuths: 1, wantDelivered: true,
		},
		{
			name:      "connection dropped mid-DATA is deferred",
			script:    upstreamScript{dropInData: true},
			to:        []string{a, b},
			want:      map[string]rcptWant{a: {queue.Deferred, 451, "4.4.2", "connection lost"}, b: {queue.Deferred, 451, "4.4.2", "connection lost"}},
			wantAuths: 1,
		},
		{
			name:      "no answer to MAIL (timeout) is deferred",
			script:    upstreamScript{stallMail: true},
			cfg:       func(c *UpstreamConfig) { c.CommandTimeout = 200 * time.Millisecond },
			want:      map[string]rcptWant{a: {queue.Deferred, 451, "4.4.2", "connection lost"}},
			wantAuths: 1,
		},
		{
			name:            "plaintext upstream without insecure_allow_plaintext: no token sent",
			cfg:             func(c *UpstreamConfig) { c.InsecureAllowPlaintext = false },
			wantUnreachable: "454 4.7.0 upstream connection is not encrypted",
		},
		{
			name:            "STARTTLS with an untrusted certificate: no token sent",
			server:          "tls",
			cfg:             func(c *UpstreamConfig) { c.TLS, c.InsecureAllowPlaintext = "starttls", false },
			wantUnreachable: "454 4.7.5 certificate of",
		},
		{
			name:            "STARTTLS not offered: no token sent",
			cfg:             func(c *UpstreamConfig) { c.TLS, c.InsecureAllowPlaintext = "starttls", false },
			wantUnreachable: "454 4.7.0 TLS with",
		},
		{
			name:   "STARTTLS with a trusted certificate delivers",
			server: "tls",
			cfg: func(c *UpstreamConfig) {
				c.TLS, c.InsecureAllowPlaintext, c.RootCAs = "starttls", false, ca.Pool
			},
			want:      map[string]rcptWant{a: {queue.Delivered, 250, "2.0.0", ""}},
			wantAuths: 1, wantDelivered: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *scriptedUpstream
			var addr string
			switch tt.server {
			case "":
				srv = startScriptedUpstream(t, tt.script, nil)
				addr = srv.addr
			case "tls":
				srv = startScriptedUpstream(t, tt.script, serverTLS)
				addr = srv.addr
			case "refused":
				addr = refusedAddr(t)
			case "greet421":
				addr = greetAndHangUp(t, "421 4.3.2 Service not available\r\n")
			}
			cfg := testUpstreamConfig(addr)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			ts := &fakeTokens{authErr: tt.authErr}
			h := newDeliveryHarness(t, newTestUpstream(t, cfg, ts, UpstreamEvents{}))
			to := tt.to
			if to == nil {
				to = []string{a}
			}
			res := h.send(t, to...)

			got := map[string]queue.RcptResult{}
			for _, r := range res.Recipients {
				if _, dup := got[r.Addr]; dup {
					t.Errorf("two results for %s: %+v", r.Addr, res.Recipients)
				}
				got[r.Addr] = r
			}
			if len(got) != len(tt.want) {
				t.Errorf("results for %d recipients, want %d: %+v", len(got), len(tt.want), res.Recipients)
			}
			for addr, w := range tt.want {
				r, ok := got[addr]
				if !ok {
					t.Errorf("%s: no result", addr)
					continue
				}
				if r.Outcome != w.outcome || r.Reply.Code != w.code || r.Reply.Enhanced != w.enhanced || !strings.Contains(r.Reply.Text, w.text) {
					t.Errorf("%s: outcome %v, reply %q; want outcome %v, reply %d %s …%s…", addr, r.Outcome, r.Reply, w.outcome, w.code, w.enhanced, w.text)
				}
			}

			if tt.wantPause == "" && res.PauseAccount != "" || !strings.HasPrefix(res.PauseAccount, tt.wantPause) {
				t.Errorf("PauseAccount = %q, want prefix %q", res.PauseAccount, tt.wantPause)
			}
			if tt.wantUnreachable == "" && res.Unreachable != "" || !strings.Contains(res.Unreachable, tt.wantUnreachable) {
				t.Errorf("Unreachable = %q, want it to contain %q", res.Unreachable, tt.wantUnreachable)
			}
			wantRetryAfter, wantConcurrency := time.Duration(0), 0
			if tt.wantThrottled {
				wantRetryAfter, wantConcurrency = cfg.ThrottleBackoff, cfg.Connections-1
			}
			if res.RetryAfter != wantRetryAfter || res.Concurrency != wantConcurrency {
				t.Errorf("RetryAfter, Concurrency = %v, %d; want %v, %d", res.RetryAfter, res.Concurrency, wantRetryAfter, wantConcurrency)
			}

			_, invalidated, refused := ts.calls()
			if invalidated != tt.wantInvalidated {
				t.Errorf("Invalidate called %d times, want %d", invalidated, tt.wantInvalidated)
			}
			if !slices.Equal(refused, tt.wantRefused) {
				t.Errorf("SMTPAuthRefused got %q, want %q", refused, tt.wantRefused)
			}
			if srv == nil {
				return
			}
			_, auths, _, _, bodies := srv.counts()
			if len(auths) != tt.wantAuths {
				t.Errorf("the server saw %d AUTH, want %d", len(auths), tt.wantAuths)
			}
			// After Invalidate the second login carries a fresh token.
			for i, resp := range auths {
				if want := fmt.Sprintf("auth=Bearer token-%d\x01", i+1); tt.wantInvalidated > 0 && !strings.Contains(resp, want) {
					t.Errorf("AUTH %d sent %q, want %q", i+1, resp, want)
				}
			}
			if delivered := len(bodies) == 1 && strings.HasSuffix(bodies[0], "\r\n\r\nhello\r\n"); delivered != tt.wantDelivered {
				t.Errorf("server got bodies %q; want delivered %v", bodies, tt.wantDelivered)
			}
		})
	}
}

// A connection is kept after a delivery and reused for the next with RSET;
// a rewriting account sends as its mailbox.
func TestUpstream_SessionReusedWithRSET(t *testing.T) {
	srv := startScriptedUpstream(t, upstreamScript{}, nil)
	var mu sync.Mutex
	opened := 0
	ts := &fakeTokens{}
	up := newTestUpstream(t, testUpstreamConfig(srv.addr), ts, UpstreamEvents{ConnOpened: func(string) {
		mu.Lock()
		opened++
		mu.Unlock()
	}})
	h := newDeliveryHarness(t, up)
	for i := range 3 {
		res := h.send(t, "a@fabrikam.test")
		if len(res.Recipients) != 1 || res.Recipients[0].Outcome != queue.Delivered {
			t.Fatalf("message %d: %+v", i+1, res)
		}
	}
	sessions, auths, mails, rsets, bodies := srv.counts()
	mu.Lock()
	defer mu.Unlock()
	if sessions != 1 || opened != 1 || len(auths) != 1 {
		t.Errorf("%d sessions, %d opened, %d logins for 3 messages; want 1 each", sessions, opened, len(auths))
	}
	if mails != 3 || len(bodies) != 3 || rsets < 2 {
		t.Errorf("%d MAIL, %d bodies, %d RSET; want 3, 3, at least 2", mails, len(bodies), rsets)
	}
	if a, _, _ := ts.calls(); a != 1 {
		t.Errorf("TokenSource.Auth called %d times, want 1 (the session is reused)", a)
	}
}

// Throttling makes each further wait longer and the account use one
// connection fewer each time, down to one; once a message is accepted
// after ThrottleRecovery the account is back to full speed.
func TestUpstream_ThrottlingSlowsDownThenRecovers(t *testing.T) {
	rate := smtpErr(421, smtp.EnhancedCode{4, 4, 2}, "Message submission rate for this client has exceeded the configured limit")
	threads := smtpErr(432, smtp.EnhancedCode{4, 3, 2}, "STOREDRV.ClientSubmit; sender thread limit exceeded")
	srv := startScriptedUpstream(t, upstreamScript{mail: []*smtp.SMTPError{rate, threads, threads}}, nil)
	cfg := testUpstreamConfig(srv.addr)
	cfg.ThrottleRecovery = time.Nanosecond
	var mu sync.Mutex
	throttled := 0
	h := newDeliveryHarness(t, newTestUpstream(t, cfg, &fakeTokens{}, UpstreamEvents{Throttled: func(string) {
		mu.Lock()
		throttled++
		mu.Unlock()
	}}))
	steps := []struct {
		retryAfter  time.Duration
		concurrency int
		outcome     queue.Outcome
	}{
		{time.Minute, 2, queue.Deferred},
		{2 * time.Minute, 1, queue.Deferred},
		{3 * time.Minute, 1, queue.Deferred}, // never fewer than one
		{0, -1, queue.Delivered},             // back to full speed
	}
	for i, s := range steps {
		res := h.send(t, "a@fabrikam.test")
		if res.RetryAfter != s.retryAfter || res.Concurrency != s.concurrency || len(res.Recipients) != 1 || res.Recipients[0].Outcome != s.outcome {
			t.Errorf("message %d: RetryAfter %v, Concurrency %d, %+v; want %v, %d, outcome %v",
				i+1, res.RetryAfter, res.Concurrency, res.Recipients, s.retryAfter, s.concurrency, s.outcome)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if throttled != 3 {
		t.Errorf("Throttled event %d times, want 3", throttled)
	}
}

// A panic in delivery is recovered, counted, and the message deferred.
func TestUpstream_PanicIsDeferred(t *testing.T) {
	srv := startScriptedUpstream(t, upstreamScript{}, nil)
	panics := make(chan string, 1)
	up := newTestUpstream(t, testUpstreamConfig(srv.addr), &fakeTokens{authPanic: true},
		UpstreamEvents{Panicked: func(account string) { panics <- account }})
	res := newDeliveryHarness(t, up).send(t, "a@fabrikam.test")
	if len(res.Recipients) != 1 || res.Recipients[0].Outcome != queue.Deferred || res.Recipients[0].Reply.Enhanced != "4.3.0" {
		t.Errorf("got %+v, want the recipient deferred with 4.3.0", res)
	}
	if a := <-panics; a != "helpdesk" {
		t.Errorf("Panicked(%q)", a)
	}
}

// rewrite_sender: the envelope sender Microsoft sees is the mailbox when
// rewriting, and for the null sender always (Microsoft accepts neither
// <> nor a sender the mailbox may not send as); "from" rewrites the
// From: header too.
func TestUpstream_SenderRewriting(t *testing.T) {
	for _, tt := range []struct {
		rewrite, from string
		wantFrom      string
		wantHeader    string
	}{
		{"off", "app@contoso.test", "app@contoso.test", "From: app@contoso.test\r\n"},
		{"off", "", "helpdesk@contoso.test", "From: app@contoso.test\r\n"},
		{"envelope", "app@contoso.test", "helpdesk@contoso.test", "From: app@contoso.test\r\n"},
		{"from", "app@contoso.test", "helpdesk@contoso.test", "From: helpdesk@contoso.test\r\nReply-To: app@contoso.test\r\n"},
	} {
		t.Run(tt.rewrite+" "+tt.from, func(t *testing.T) {
			srv := startScriptedUpstream(t, upstreamScript{}, nil)
			h := newDeliveryHarness(t, newTestUpstreamRewriting(t, testUpstreamConfig(srv.addr), &fakeTokens{}, UpstreamEvents{}, tt.rewrite))
			res := h.sendEnvelope(t, queue.Envelope{From: tt.from, To: []string{"a@fabrikam.test"}, Account: "helpdesk"})
			if len(res.Recipients) != 1 || res.Recipients[0].Outcome != queue.Delivered {
				t.Fatalf("%+v", res)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if !slices.Equal(srv.froms, []string{tt.wantFrom}) {
				t.Errorf("MAIL FROM %q, want %q", srv.froms, tt.wantFrom)
			}
			if len(srv.bodies) != 1 || !strings.Contains(srv.bodies[0], tt.wantHeader) {
				t.Errorf("body %q lacks %q", srv.bodies, tt.wantHeader)
			}
		})
	}
}

func TestUpstream_UnknownAccountDeferred(t *testing.T) {
	up := newTestUpstream(t, testUpstreamConfig(refusedAddr(t)), &fakeTokens{}, UpstreamEvents{})
	res := up.Deliver(context.Background(), &queue.Delivery{ID: "x", Account: "gone", To: []string{"a@fabrikam.test"}})
	if len(res.Recipients) != 1 || res.Recipients[0].Outcome != queue.Deferred || res.Recipients[0].Reply.Enhanced != "4.3.5" {
		t.Errorf("got %+v, want one recipient deferred with 4.3.5", res)
	}
}

// Check walks token, permissions, connect and login, says which step
// fails and what to do, and changes no state: a 535 neither pauses the
// account nor invalidates its token.
func TestUpstream_CheckSaysWhichStepFails(t *testing.T) {
	smtpSend := tokens.Grants{Scopes: []string{"SMTP.Send", "offline_access"}, User: "helpdesk@contoso.test", Expiry: time.Now().Add(time.Hour), Fingerprint: "fp"}
	type step struct {
		name string
		ok   bool
		text string // in Detail or Fix
	}
	tests := []struct {
		name      string
		account   string
		script    upstreamScript
		refused   bool
		grants    tokens.Grants
		grantsErr error
		wantOK    bool
		want      []step
	}{
		{
			name: "all pass", grants: smtpSend, wantOK: true,
			want: []step{{"token", true, "fp"}, {"permissions", true, "SMTP.Send"}, {"connect", true, "without TLS"}, {"login", true, "accepted"}},
		},
		{
			name: "delegated token without SMTP.Send", grants: tokens.Grants{Scopes: []string{"Mail.Read"}},
			want: []step{{"token", true, ""}, {"permissions", false, "SMTP.Send"}, {"connect", true, ""}, {"login", true, ""}},
		},
		{
			name: "app token without SMTP.SendAsApp", grants: tokens.Grants{Roles: []string{"Mail.Send"}},
			want: []step{{"token", true, ""}, {"permissions", false, "SMTP.SendAsApp"}, {"connect", true, ""}, {"login", true, ""}},
		},
		{
			name: "SMTP AUTH disabled", grants: smtpSend,
			script: upstreamScript{auth: []*smtp.SMTPError{smtpErr(535, smtp.EnhancedCode{5, 7, 139}, "Authentication unsuccessful, SmtpClientAuthentication is disabled")}},
			want:   []step{{"token", true, ""}, {"permissions", true, ""}, {"connect", true, ""}, {"login", false, "Set-CASMailbox"}},
		},
		{
			name: "connection refused", grants: smtpSend, refused: true,
			want: []step{{"token", true, ""}, {"permissions", true, ""}, {"connect", false, "outbound TCP"}},
		},
		{
			name: "token refused by Entra",
			grantsErr: &tokens.AccountError{Account: "helpdesk", State: tokens.Misconfigured,
				Explanation: tokens.Explanation{Code: "AADSTS7000215", Title: "the client secret is wrong", Action: "put a new secret in client_secret"}},
			want: []step{{"token", false, "new secret"}},
		},
		{
			name: "token endpoint unreachable", grantsErr: tokens.ErrTransient,
			want: []step{{"token", false, "firewall"}},
		},
		{
			name: "unknown account", account: "nosuch",
			want: []step{{"account", false, "no account named nosuch"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addr string
			if tt.refused {
				addr = refusedAddr(t)
			} else {
				addr = startScriptedUpstream(t, tt.script, nil).addr
			}
			ts := &fakeTokens{grants: tt.grants, grantsErr: tt.grantsErr}
			up := newTestUpstream(t, testUpstreamConfig(addr), ts, UpstreamEvents{})
			account := tt.account
			if account == "" {
				account = "helpdesk"
			}
			res := up.Check(context.Background(), account, "helpdesk@contoso.test")
			if res.OK != tt.wantOK {
				t.Errorf("OK = %v, want %v", res.OK, tt.wantOK)
			}
			if len(res.Steps) != len(tt.want) {
				t.Fatalf("steps %+v, want %d", res.Steps, len(tt.want))
			}
			for i, w := range tt.want {
				s := res.Steps[i]
				if s.Step != w.name || s.OK != w.ok || !strings.Contains(s.Detail+" "+s.Fix, w.text) {
					t.Errorf("step %d = %+v; want %s ok=%v mentioning %q", i, s, w.name, w.ok, w.text)
				}
			}
			// One Invalidate: the check asks for a fresh token (a changed
			// secret or certificate must be tried), and changes nothing else.
			want := 1
			if tt.name == "unknown account" {
				want = 0
			}
			if _, invalidated, refused := ts.calls(); invalidated != want || len(refused) != 0 {
				t.Errorf("Check: %d Invalidate, SMTPAuthRefused %q; want %d and none", invalidated, refused, want)
			}
		})
	}
}
