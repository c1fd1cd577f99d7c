package relay

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
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
	// Addr is the account's submission server, host:port; "" is
	// UpstreamConfig.Addr.
	Addr string
	// Service names the account's provider to people: "Microsoft 365"
	// (when empty) or "Gmail".
	Service string
	// Unpaced turns UpstreamConfig.RatePerMinute off for the account: a
	// High Volume Email account is not held to a mailbox's 30 messages a
	// minute (Microsoft's throttling replies still slow it down).
	Unpaced bool
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

// service is how u's provider is named in logs, checks and bounces.
func (u *upAccount) service() string {
	if u.Service == "" {
		return "Microsoft 365"
	}
	return u.Service
}

// Service is how account's provider is named ("Microsoft 365", "Gmail").
func (d *Upstream) Service(account string) string {
	if u, ok := d.accounts[account]; ok {
		return u.service()
	}
	return "Microsoft 365"
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
		if cfg.RatePerMinute > 0 && !a.Unpaced {
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
	// A paused account or an unreachable upstream is not the message's
	// attempt: the queue does not count it, nor does the log.
	counted := res.PauseAccount == "" && res.Unreachable == ""
	d.log.Info("delivery: attempt", "id", dl.ID, "account", dl.Account, "attempt", dl.Attempt, "counted", counted,
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
		if aerr.auth535 && aerr.reply.Enhanced != "5.7.139" && mayRetryAuth {
			// The token may be stale or revoked (Microsoft's 5.7.3,
			// Gmail's 5.7.8): fetch a fresh one and try once more on a new
			// connection before blaming the account. SMTP AUTH turned off
			// for the mailbox (5.7.139) no token can change.
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
