package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
	"golang.org/x/time/rate"
)

// TokenSource signs accounts in (tokens.Manager): the access token never
// leaves it, only a ready SASL client does.
type TokenSource interface {
	Auth(ctx context.Context, account string) (tokens.Credential, error)
	// Credential is Auth even while Microsoft refuses the account (the
	// check and Try again must see whether it still does).
	Credential(ctx context.Context, account string) (tokens.Credential, error)
	// Grants reads what the account's token allows (the pre-flight check).
	Grants(ctx context.Context, account string) (tokens.Grants, error)
	Invalidate(account string)
	// SMTPAuthRefused records Microsoft's refusal of a fresh token (535) as
	// the account's state, which pauses its mail, and explains it.
	SMTPAuthRefused(account string, code int, enhanced string) tokens.Explanation
}

// UpstreamConfig says how to reach Microsoft 365. Timings are fields.
type UpstreamConfig struct {
	Addr string
	// TLS is "starttls", "implicit" or "none" (tests only, with InsecureAllowPlaintext).
	TLS                    string
	Hostname               string // sent with EHLO
	RootCAs                *x509.CertPool
	InsecureAllowPlaintext bool

	Connections           int     // per account
	RatePerMinute         float64 // per account; 0 = unlimited
	MessagesPerConnection int
	IdleTimeout           time.Duration
	DialTimeout           time.Duration
	CommandTimeout        time.Duration
	// ThrottleBackoff is the least wait after 421 4.4.2 / 432 4.3.2.
	ThrottleBackoff time.Duration
	// ThrottleRecovery is how long after the last throttling an account gets
	// its full concurrency back.
	ThrottleRecovery time.Duration
}

// UpstreamAccount is what delivery needs to know of an account.
type UpstreamAccount struct {
	Name    string
	Mailbox string
	// Rewrite: "off", "envelope" or "from" (envelope and From: header).
	Rewrite string
}

// UpstreamEvents receives what delivery does, for metrics. Any field may be nil.
type UpstreamEvents struct {
	ConnOpened func(account string)
	Reply      func(account string, code int, enhanced string)
	Throttled  func(account string)
	// Delivered is called once per message accepted upstream, with the
	// reply and the time since the relay accepted it.
	// Delivered reports a message Microsoft accepted; isBounce marks a DSN
	// we made.
	Delivered func(id, account string, reply queue.Reply, sinceAccepted time.Duration, isBounce bool)
	// Deferred is called once per attempt that left a recipient deferred.
	Deferred func(account string)
	// Panicked is called once per delivery that panicked (recovered).
	Panicked func(account string)
}

// Upstream is the relay's upstream side: it sends queued messages to
// Microsoft 365 (it implements queue.Deliverer) over pooled, authenticated
// SMTP sessions.
type Upstream struct {
	cfg      UpstreamConfig
	tokens   TokenSource
	log      *slog.Logger
	events   UpstreamEvents
	accounts map[string]*upAccount
	done     chan struct{}
	wg       sync.WaitGroup
}

type upAccount struct {
	UpstreamAccount
	limiter *rate.Limiter
	// sessions holds a token per upstream session open (in use, idle in
	// the pool, or still closing): Microsoft counts sessions, so a new one
	// is opened only after an old one is closed.
	sessions chan struct{}

	mu             sync.Mutex
	idle           []*upConn
	throttledAt    time.Time
	concurrency    int
	throttleStreak int
}

type upConn struct {
	c        *smtp.Client
	raw      net.Conn // under c (and its TLS): closed to cut a stuck delivery
	u        *upAccount
	once     sync.Once
	used     int
	lastUsed time.Time
	// tokenExpiry is when the token it signed in with expires: a session
	// is not reused past it, so Microsoft never sees a stale credential.
	tokenExpiry time.Time
}

// NewUpstream builds the upstream side.
func NewUpstream(cfg UpstreamConfig, accounts []UpstreamAccount, ts TokenSource, log *slog.Logger, events UpstreamEvents) *Upstream {
	if cfg.Connections <= 0 {
		cfg.Connections = 3
	}
	if cfg.MessagesPerConnection <= 0 {
		cfg.MessagesPerConnection = 100
	}
	if cfg.ThrottleBackoff <= 0 {
		cfg.ThrottleBackoff = time.Minute
	}
	if cfg.ThrottleRecovery <= 0 {
		cfg.ThrottleRecovery = 10 * time.Minute
	}
	d := &Upstream{cfg: cfg, tokens: ts, log: log, events: events, accounts: map[string]*upAccount{}, done: make(chan struct{})}
	for _, a := range accounts {
		lim := rate.NewLimiter(rate.Inf, 1)
		if cfg.RatePerMinute > 0 {
			// Burst of one: any 60 s window then holds at most
			// rate_per_minute+1 messages. A larger burst would add to the
			// steady rate and let Microsoft's per-minute limit be exceeded.
			lim = rate.NewLimiter(rate.Limit(cfg.RatePerMinute/60), 1)
		}
		d.accounts[a.Name] = &upAccount{UpstreamAccount: a, limiter: lim, concurrency: cfg.Connections,
			sessions: make(chan struct{}, cfg.Connections)}
	}
	d.wg.Add(1)
	go d.janitor()
	return d
}

// Close closes idle upstream connections and stops the janitor.
func (d *Upstream) Close() {
	select {
	case <-d.done:
		return // closed already
	default:
	}
	close(d.done)
	d.wg.Wait()
	// QUIT every pooled session at once; a server that does not answer
	// within 5 s is cut off, so shutdown stays bounded whatever it does.
	var idle []*upConn
	for _, u := range d.accounts {
		u.mu.Lock()
		idle = append(idle, u.idle...)
		u.idle = nil
		u.mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Add(1)
		go func() { defer wg.Done(); c.quit() }()
	}
	quitted := make(chan struct{})
	go func() { wg.Wait(); close(quitted) }()
	select {
	case <-quitted:
	case <-time.After(5 * time.Second):
		for _, c := range idle {
			c.raw.Close()
		}
		<-quitted
	}
}

// quit ends the session politely (QUIT, bounded by the command timeout)
// and frees its slot once the connection is closed.
func (c *upConn) quit() {
	c.once.Do(func() {
		c.c.Quit()
		c.c.Close()
		<-c.u.sessions
	})
}

// drop closes the connection at once and frees its slot.
func (c *upConn) drop() {
	c.once.Do(func() {
		c.c.Close()
		<-c.u.sessions
	})
}

// janitor closes connections idle longer than IdleTimeout.
func (d *Upstream) janitor() {
	defer d.wg.Done()
	t := time.NewTicker(max(d.cfg.IdleTimeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-t.C:
		}
		for _, u := range d.accounts {
			u.mu.Lock()
			keep := u.idle[:0]
			var stale []*upConn
			for _, c := range u.idle {
				if time.Since(c.lastUsed) > d.cfg.IdleTimeout {
					stale = append(stale, c)
				} else {
					keep = append(keep, c)
				}
			}
			u.idle = keep
			u.mu.Unlock()
			for _, c := range stale {
				c.quit()
			}
		}
	}
}

// idleCheckAfter: a pooled connection unused this long gets a NOOP before reuse.
const idleCheckAfter = 2 * time.Second

// attemptError is a failure before or outside a transaction: it applies to
// every recipient of the attempt.
type attemptError struct {
	outcome queue.Outcome
	reply   queue.Reply
	pause   string // the account cannot send: pause it with this explanation
	auth535 bool   // Microsoft answered AUTH with 535 (reply holds it)
	// unreachable: the upstream could not be reached at all (connection,
	// DNS, TLS handshake, timeout, 421 at the greeting): an outage.
	unreachable bool
}

// Deliver implements queue.Deliverer.
func (d *Upstream) Deliver(ctx context.Context, dl *queue.Delivery) queue.Result {
	u, ok := d.accounts[dl.Account]
	if !ok {
		return all(dl, queue.Deferred, queue.Reply{Code: 451, Enhanced: "4.3.5", Text: "account " + dl.Account + " is not configured any more; restore it or delete the message"})
	}
	start := time.Now()
	if err := u.limiter.Wait(ctx); err != nil {
		return all(dl, queue.Deferred, queue.Reply{Code: 451, Enhanced: "4.4.5", Text: "relay shutting down"})
	}
	res := d.safeDeliver(ctx, u, dl)
	if d.events.Deferred != nil {
		for _, r := range res.Recipients {
			if r.Outcome == queue.Deferred {
				d.events.Deferred(dl.Account)
				break
			}
		}
	}
	d.log.Info("delivery: attempt", "id", dl.ID, "account", dl.Account, "attempt", dl.Attempt,
		"recipients", len(dl.To), "result", summarize(res), "duration", time.Since(start).Round(time.Millisecond).String())
	return res
}

// safeDeliver runs one delivery; a panic in it is recovered, logged with
// its stack and counted, and the message deferred: a bug never takes the
// daemon down, nor burns the message's attempts in a crash loop.
func (d *Upstream) safeDeliver(ctx context.Context, u *upAccount, dl *queue.Delivery) (res queue.Result) {
	defer func() {
		if p := recover(); p != nil {
			d.log.Error("delivery: panic recovered; the message is deferred", "id", dl.ID, "account", dl.Account,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if d.events.Panicked != nil {
				d.events.Panicked(dl.Account)
			}
			res = all(dl, queue.Deferred, queue.Reply{Code: 451, Enhanced: "4.3.0", Text: "internal error in the relay's delivery (logged); will retry"})
		}
	}()
	return d.deliver(ctx, u, dl, true)
}

func summarize(res queue.Result) string {
	if res.PauseAccount != "" {
		return "account paused: " + res.PauseAccount
	}
	if res.Unreachable != "" {
		return "upstream unreachable: " + res.Unreachable
	}
	var parts []string
	for _, r := range res.Recipients {
		parts = append(parts, r.Reply.String())
	}
	if len(parts) > 0 && allSame(parts) {
		return parts[0]
	}
	return strings.Join(parts, " | ")
}

func allSame(s []string) bool {
	for _, x := range s[1:] {
		if x != s[0] {
			return false
		}
	}
	return true
}

func all(dl *queue.Delivery, o queue.Outcome, r queue.Reply) queue.Result {
	res := queue.Result{}
	for _, to := range dl.To {
		res.Recipients = append(res.Recipients, queue.RcptResult{Addr: to, Outcome: o, Reply: r})
	}
	return res
}

func (d *Upstream) deliver(ctx context.Context, u *upAccount, dl *queue.Delivery, mayRetryAuth bool) queue.Result {
	c, aerr := d.conn(ctx, u)
	if aerr != nil {
		if aerr.auth535 && aerr.reply.Enhanced == "5.7.3" && mayRetryAuth {
			// The token may be stale or revoked: fetch a fresh one and try
			// once more on a new connection before blaming the account.
			d.tokens.Invalidate(u.Name)
			return d.deliver(ctx, u, dl, false)
		}
		if aerr.auth535 {
			// The account's state (one truth for the status page, API,
			// metrics and webhook) pauses its mail; the result says so too,
			// so this attempt is not counted.
			return queue.Result{PauseAccount: d.tokens.SMTPAuthRefused(u.Name, aerr.reply.Code, aerr.reply.Enhanced).String()}
		}
		if aerr.pause != "" {
			return queue.Result{PauseAccount: aerr.pause}
		}
		if aerr.unreachable {
			return queue.Result{Unreachable: aerr.reply.String()}
		}
		return all(dl, aerr.outcome, aerr.reply)
	}
	// Shutdown (or a cancelled attempt) cuts a stuck transfer at once.
	stop := context.AfterFunc(ctx, func() { c.raw.Close() })
	res, healthy := d.transact(ctx, u, c, dl)
	if !stop() {
		healthy = false
	}
	if healthy && c.used < d.cfg.MessagesPerConnection {
		c.lastUsed = time.Now()
		u.mu.Lock()
		u.idle = append(u.idle, c)
		u.mu.Unlock()
	} else {
		go c.quit() // its slot is free only once it is closed
	}
	return res
}

// conn returns an authenticated connection: an idle one that still answers
// RSET, or a new one.
func (d *Upstream) conn(ctx context.Context, u *upAccount) (*upConn, *attemptError) {
	for {
		u.mu.Lock()
		n := len(u.idle)
		if n == 0 {
			u.mu.Unlock()
			break
		}
		c := u.idle[n-1]
		u.idle = u.idle[:n-1]
		u.mu.Unlock()
		if !time.Now().Before(c.tokenExpiry) {
			c.quit()
			continue
		}
		// A connection idle for a while may have been dropped by the server:
		// NOOP checks it (RFC 5321 4.1.1.9); RSET starts a clean
		// transaction (4.1.1.5).
		if time.Since(c.lastUsed) > idleCheckAfter {
			if err := c.c.Noop(); err != nil {
				c.drop()
				continue
			}
		}
		if err := c.c.Reset(); err == nil {
			return c, nil
		}
		c.drop()
	}
	return d.dial(ctx, u)
}

// acquire takes a session slot for u, waiting for a closing session to
// finish; an idle pooled session is closed to make room if need be.
func (d *Upstream) acquire(ctx context.Context, u *upAccount) error {
	for {
		select {
		case u.sessions <- struct{}{}:
			return nil
		default:
		}
		u.mu.Lock()
		var c *upConn
		if n := len(u.idle); n > 0 {
			c, u.idle = u.idle[0], u.idle[1:]
		}
		u.mu.Unlock()
		if c != nil {
			c.quit()
			continue
		}
		select {
		case u.sessions <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *Upstream) dial(ctx context.Context, u *upAccount) (*upConn, *attemptError) {
	if err := d.acquire(ctx, u); err != nil {
		return nil, &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.4.5", Text: "relay shutting down"}}
	}
	c, raw, aerr := d.open(ctx)
	if aerr != nil {
		<-u.sessions
		return nil, aerr
	}
	if d.events.ConnOpened != nil {
		d.events.ConnOpened(u.Name)
	}
	uc, aerr := d.login(ctx, u, c)
	if aerr != nil {
		<-u.sessions
		return nil, aerr
	}
	uc.raw, uc.u = raw, u
	return uc, nil
}

// deadlineConn gives every read and write its own deadline: a peer that
// stops reading or answering for timeout fails the operation, however long
// the whole transfer (a 35 MB body) takes. go-smtp's client sets deadlines
// for commands but none while the body is written.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c deadlineConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c deadlineConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// Close ends our side and waits (at most 2 s) for the server to close its
// own, so that by the time a session's slot is free Microsoft has seen it
// end: a new session never overlaps the old one there.
func (c deadlineConn) Close() error {
	if tc, ok := c.Conn.(*net.TCPConn); ok && tc.CloseWrite() == nil {
		tc.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, io.LimitReader(tc, 64<<10))
	}
	return c.Conn.Close()
}

// open connects to the upstream: TCP, TLS (STARTTLS or implicit), EHLO.
// It refuses a connection without TLS unless InsecureAllowPlaintext. It
// returns the TCP connection under the client too, to cut it if need be.
func (d *Upstream) open(ctx context.Context) (*smtp.Client, net.Conn, *attemptError) {
	c, raw, aerr := d.openConn(ctx)
	if aerr != nil {
		// Nothing of the session worked: the upstream is unreachable
		// (an outage), unless it answered at EHLO with something other
		// than 421.
		aerr.unreachable = aerr.reply.Code == 421 || aerr.reply.Code == 451 || aerr.reply.Code == 454
	}
	return c, raw, aerr
}

func (d *Upstream) openConn(ctx context.Context) (*smtp.Client, net.Conn, *attemptError) {
	connErr := func(what string, err error) *attemptError {
		return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.4.1", Text: fmt.Sprintf("%s %s: %v", what, d.cfg.Addr, err)}}
	}
	dialer := &net.Dialer{Timeout: d.cfg.DialTimeout}
	host, _, _ := net.SplitHostPort(d.cfg.Addr)
	tlsCfg := &tls.Config{ServerName: host, RootCAs: d.cfg.RootCAs, MinVersion: tls.VersionTLS12}
	raw, err := dialer.DialContext(ctx, "tcp", d.cfg.Addr)
	if err != nil {
		return nil, nil, connErr("cannot connect to", err)
	}
	// Every read and write below has its own deadline, TLS included.
	conn := net.Conn(deadlineConn{Conn: raw, timeout: d.cfg.CommandTimeout})
	var c *smtp.Client
	switch d.cfg.TLS {
	case "implicit":
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, nil, d.tlsErr(err)
		}
		c = smtp.NewClient(tc)
	case "starttls":
		c, err = smtp.NewClientStartTLS(conn, tlsCfg)
		if err != nil {
			raw.Close()
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				return nil, nil, d.replyErr("STARTTLS", err)
			}
			return nil, nil, d.tlsErr(err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = d.cfg.CommandTimeout
	c.SubmissionTimeout = d.cfg.CommandTimeout
	// After STARTTLS this is the second EHLO, over TLS (RFC 3207 4.2).
	if err := c.Hello(d.cfg.Hostname); err != nil {
		c.Close()
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ce) {
			return nil, nil, d.tlsErr(err)
		}
		return nil, nil, d.replyErr("EHLO", err)
	}
	if _, isTLS := c.TLSConnectionState(); !isTLS && !d.cfg.InsecureAllowPlaintext {
		c.Close()
		return nil, nil, &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 454, Enhanced: "4.7.0",
			Text: "upstream connection is not encrypted; refusing to send an OAuth token"}}
	}
	return c, raw, nil
}

func (d *Upstream) tlsErr(err error) *attemptError {
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 454, Enhanced: "4.7.5",
			Text: fmt.Sprintf("certificate of %s not trusted: %v (upstream.ca_file adds a CA)", d.cfg.Addr, ce.Err)}}
	}
	return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 454, Enhanced: "4.7.0",
		Text: fmt.Sprintf("TLS with %s failed (%v); refusing to send an OAuth token without TLS", d.cfg.Addr, err)}}
}

// login signs in to an open upstream connection with the account's token
// (XOAUTH2); the connection is closed on failure.
func (d *Upstream) login(ctx context.Context, u *upAccount, c *smtp.Client) (*upConn, *attemptError) {
	cred, err := d.tokens.Auth(ctx, u.Name)
	if err != nil {
		c.Close()
		var ae *tokens.AccountError
		if errors.As(err, &ae) {
			return nil, &attemptError{pause: ae.Explanation.String()}
		}
		return nil, &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.7.0", Text: "no access token yet: " + err.Error()}}
	}
	if err := c.Auth(cred.SASL); err != nil {
		c.Close()
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 {
			enh := enhanced(se)
			d.reply(u.Name, se.Code, enh)
			d.log.Warn("delivery: Microsoft refused the login", "account", u.Name, "reply", fmt.Sprintf("%d %s %s", se.Code, enh, se.Message), "token", cred.Fingerprint)
			return nil, &attemptError{auth535: true, reply: queue.Reply{Code: se.Code, Enhanced: enh, Text: se.Message}}
		}
		return nil, d.replyErr("AUTH", err)
	}
	return &upConn{c: c, tokenExpiry: cred.Expiry}, nil
}

func enhanced(se *smtp.SMTPError) string {
	if se.EnhancedCode == smtp.NoEnhancedCode || se.EnhancedCode == (smtp.EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

func (d *Upstream) reply(account string, code int, enh string) {
	if d.events.Reply != nil {
		d.events.Reply(account, code, enh)
	}
}

// replyErr classifies an error outside a transaction.
func (d *Upstream) replyErr(stage string, err error) *attemptError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		// Even a 5xx at EHLO/AUTH is about the connection, not the message:
		// retrying later is right, bouncing would be wrong.
		return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: se.Code, Enhanced: enhanced(se), Text: se.Message}}
	}
	return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.4.2", Text: fmt.Sprintf("connection lost at %s: %v", stage, err)}}
}

// transact runs MAIL, RCPT… and DATA. healthy says the connection may be reused.
func (d *Upstream) transact(ctx context.Context, u *upAccount, c *upConn, dl *queue.Delivery) (queue.Result, bool) {
	c.used++
	from := dl.From
	if u.Rewrite != "off" && u.Rewrite != "" || from == "" {
		from = u.Mailbox // Microsoft accepts neither <> nor a sender the mailbox may not send as
	}
	opts := &smtp.MailOptions{UTF8: dl.SMTPUTF8, Size: dl.Size}
	if dl.EightBit {
		opts.Body = smtp.Body8BitMIME
	}
	if ok, _ := c.c.Extension("SMTPUTF8"); !ok {
		opts.UTF8 = false
	}
	res := queue.Result{}
	// go-smtp's client writes "MAIL FROM:<%s>" with the string as given:
	// only an address parsed again and written by Address.String goes.
	fromPath, err := upstreamPath(from, dl.SMTPUTF8)
	if err != nil {
		return all(dl, queue.Failed, queue.Reply{Code: 553, Enhanced: "5.1.7", Text: "sender address not sent upstream: " + err.Error()}), true
	}
	if err := c.c.Mail(fromPath, opts); err != nil {
		r, throttled, conn := d.classify(u, err)
		out := all(dl, outcome(r), r)
		if throttled {
			out.RetryAfter, out.Concurrency = d.throttle(u)
		}
		return out, !conn && !throttled
	}
	var accepted []string
	for i, to := range dl.To {
		path, err := upstreamPath(to, dl.SMTPUTF8)
		if err != nil {
			res.Recipients = append(res.Recipients, queue.RcptResult{Addr: to, Outcome: queue.Failed,
				Reply: queue.Reply{Code: 553, Enhanced: "5.1.3", Text: "recipient address not sent upstream: " + err.Error()}})
			continue
		}
		err = c.c.Rcpt(path, nil)
		if err == nil {
			accepted = append(accepted, to)
			continue
		}
		r, throttled, conn := d.classify(u, err)
		if conn {
			// The connection is gone: every recipient not yet answered is deferred.
			for _, rest := range dl.To[i:] {
				res.Recipients = append(res.Recipients, queue.RcptResult{Addr: rest, Outcome: queue.Deferred, Reply: r})
			}
			for _, a := range accepted {
				res.Recipients = append(res.Recipients, queue.RcptResult{Addr: a, Outcome: queue.Deferred, Reply: r})
			}
			return res, false
		}
		if throttled {
			res.RetryAfter, res.Concurrency = d.throttle(u)
		}
		res.Recipients = append(res.Recipients, queue.RcptResult{Addr: to, Outcome: outcome(r), Reply: r})
	}
	if len(accepted) == 0 {
		c.c.Reset()
		return res, true
	}
	r, err := d.data(u, c, dl)
	if err != nil {
		var throttled, conn bool
		r, throttled, conn = d.classify(u, err)
		if throttled {
			res.RetryAfter, res.Concurrency = d.throttle(u)
		}
		for _, a := range accepted {
			res.Recipients = append(res.Recipients, queue.RcptResult{Addr: a, Outcome: outcome(r), Reply: r})
		}
		return res, !conn && !throttled
	}
	d.reply(u.Name, r.Code, r.Enhanced)
	for _, a := range accepted {
		res.Recipients = append(res.Recipients, queue.RcptResult{Addr: a, Outcome: queue.Delivered, Reply: r})
	}
	if d.events.Delivered != nil {
		d.events.Delivered(dl.ID, u.Name, r, time.Since(dl.Arrived), dl.IsBounce)
	}
	if d.throttleOver(u) {
		res.Concurrency = -1 // full speed again
	}
	return res, true
}

func (d *Upstream) data(u *upAccount, c *upConn, dl *queue.Delivery) (queue.Reply, error) {
	body, err := dl.Open()
	if err != nil {
		return queue.Reply{}, fmt.Errorf("cannot read the queued message: %w", err)
	}
	defer body.Close()
	w, err := c.c.Data()
	if err != nil {
		return queue.Reply{}, err
	}
	var src io.Reader = bufio.NewReaderSize(body, 64<<10)
	if u.Rewrite == "from" {
		src = rewriteFrom(src, u.Mailbox)
	}
	if _, err := io.Copy(w, src); err != nil {
		w.Close()
		return queue.Reply{}, err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return queue.Reply{}, err
	}
	code, enh, text := 250, "", resp.StatusText
	// StatusText is "2.0.0 OK <id> [Hostname=…]" with ENHANCEDSTATUSCODES.
	if e, rest, ok := strings.Cut(text, " "); ok && len(e) >= 5 && e[0] == '2' && e[1] == '.' {
		enh, text = e, rest
	}
	return queue.Reply{Code: code, Enhanced: enh, Text: text}, nil
}

// classify turns an error inside a transaction into a reply, and says
// whether Microsoft is throttling and whether the connection is gone.
func (d *Upstream) classify(u *upAccount, err error) (r queue.Reply, throttled, connGone bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return queue.Reply{Code: 451, Enhanced: "4.4.2", Text: "connection lost: " + err.Error()}, false, true
	}
	r = queue.Reply{Code: se.Code, Enhanced: enhanced(se), Text: se.Message}
	d.reply(u.Name, r.Code, r.Enhanced)
	switch {
	case r.Enhanced == "4.4.2" && r.Code == 421, r.Enhanced == "4.3.2":
		return r, true, r.Code == 421
	case r.Code == 421:
		return r, false, true // the server closes the connection after 421
	case senderThrottled(r):
		return r, true, false
	case notAuthenticated(r):
		return r, false, true // this session lost its login: a new one
	}
	return r, false, false
}

// senderThrottled: "550 5.2.251–5.2.255 Sender throttled due to
// continuous … errors" (M365.md) is about the mailbox, not the message: it
// is deferred with the throttling back-off, never bounced. (SendAsDenied is
// 554 5.2.252, after the final dot.)
func senderThrottled(r queue.Reply) bool {
	return r.Code == 550 && strings.HasPrefix(r.Enhanced, "5.2.25")
}

// notAuthenticated: "530 5.7.57 Client not authenticated" at MAIL means
// the session's login was lost, not that the message is refused.
func notAuthenticated(r queue.Reply) bool { return r.Code == 530 && r.Enhanced == "5.7.57" }

func outcome(r queue.Reply) queue.Outcome {
	switch {
	case r.Code >= 200 && r.Code < 300:
		return queue.Delivered
	case senderThrottled(r), notAuthenticated(r):
		return queue.Deferred
	case r.Code >= 500:
		return queue.Failed
	}
	return queue.Deferred
}

// throttle slows the account down after 421 4.4.2 / 432 4.3.2: it returns
// how long to wait before the next attempt (growing while the throttling
// lasts) and how many deliveries of the account may run at once (one
// fewer, at least one); the queue applies both.
func (d *Upstream) throttle(u *upAccount) (time.Duration, int) {
	u.mu.Lock()
	u.throttledAt = time.Now()
	u.throttleStreak++
	u.concurrency = max(1, u.concurrency-1)
	n, streak := u.concurrency, u.throttleStreak
	u.mu.Unlock()
	if d.events.Throttled != nil {
		d.events.Throttled(u.Name)
	}
	wait := d.cfg.ThrottleBackoff * time.Duration(min(streak, 8))
	d.log.Warn("delivery: Microsoft is throttling the account; slowing down", "account", u.Name, "connections", n, "retry_after", wait.String())
	return wait, n
}

// throttleOver reports, after an accepted message, whether the account's
// throttling has been over long enough to go back to full concurrency.
func (d *Upstream) throttleOver(u *upAccount) bool {
	u.mu.Lock()
	u.throttleStreak = 0 // accepted: the next throttling starts the back-off afresh
	if u.throttledAt.IsZero() || time.Since(u.throttledAt) < d.cfg.ThrottleRecovery {
		u.mu.Unlock()
		return false
	}
	u.throttledAt, u.throttleStreak, u.concurrency = time.Time{}, 0, d.cfg.Connections
	u.mu.Unlock()
	d.log.Info("delivery: throttling over; full speed again", "account", u.Name)
	return true
}
