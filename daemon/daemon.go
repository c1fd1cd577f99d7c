package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/credfile"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/inbound"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/relay/admin"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// Relay is a whole oauthrelay: tokens, queue, delivery, SMTP listener and
// admin HTTP server, built from a configuration.
type Relay struct {
	Config   *configs.Config
	Log      *slog.Logger
	Tokens   *tokens.Manager
	Queue    *queue.Queue
	Upstream *relay.Upstream
	Listener *relay.Listener
	// Inbound serves local IMAP and POP3 (package inbound); nil while
	// inbound.imap.addr and inbound.pop3.addr are empty.
	Inbound *inbound.Server
	// Admin is the admin HTTP handler: status page, API, Connect, metrics, health.
	Admin   http.Handler
	Metrics *Metrics
	// AdminToken is the token the admin server requires.
	AdminToken string

	smtpLn, adminLn net.Listener
	imapLn, pop3Ln  net.Listener
	adminSrv        *http.Server
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	unsubscribe     func()
	certAlerts      *certificateAlerts
}

// Hooks lets callers (metrics, the demo, tests) observe the relay. Any may be nil.
type Hooks struct {
	Listener relay.ListenerEvents
	Upstream relay.UpstreamEvents
	// Tune adjusts component options before they are built (tests shorten timings).
	TuneUpstream func(*relay.UpstreamConfig)
	TuneTokens   func(*tokens.Options)
	TuneQueue    func(*queue.Options)
	// Version is shown on the status page and in /api/status.
	Version string
}

// AdminMaxConns caps the admin server's open connections.
const AdminMaxConns = 64

// AdminPublicURL is admin.public_url, or the admin address as a URL.
func AdminPublicURL(c *configs.Config) string {
	if c.Admin.PublicURL != "" {
		return strings.TrimRight(c.Admin.PublicURL, "/")
	}
	return "http://" + c.Admin.Addr
}

// TokenAccounts maps configured accounts to the tokens package's view.
func TokenAccounts(c *configs.Config) []tokens.Account {
	out := make([]tokens.Account, 0, len(c.Accounts))
	for _, a := range c.Accounts {
		p := a.Profile()
		out = append(out, tokens.Account{Name: a.Name, Tenant: a.Tenant, ClientID: a.ClientID,
			ClientSecret: a.ClientSecret, Flow: a.Flow, Mailbox: a.Mailbox, Authority: a.Authority, Protocols: a.Protocols,
			Provider: a.Provider, Cloud: a.Cloud, Kind: hveKind(a.Kind), Resource: p.Resource, AppResource: p.AppResource,
			CertFile: a.ClientCertificateFile, KeyFile: a.ClientKeyFile, ServiceAccountFile: a.ServiceAccountFile})
	}
	return out
}

// OpenTokens opens the keysafe (creating its key on first start) and the
// token manager.
func OpenTokens(c *configs.Config, log *slog.Logger, tune func(*tokens.Options)) (*tokens.Manager, error) {
	key, err := tokens.LoadKey(c.Keysafe.Key, c.Keysafe.KeyFile, c.Keysafe.Path, log)
	if err != nil {
		return nil, err
	}
	store, err := tokens.OpenFileKeysafe(c.Keysafe.Path, key)
	if err != nil {
		return nil, err
	}
	opts := tokens.Options{
		Accounts:          TokenAccounts(c),
		Store:             store,
		RedirectURL:       tokens.CallbackURL(AdminPublicURL(c)),
		RefreshSkew:       c.Tokens.RefreshSkew,
		BackgroundRefresh: c.Tokens.BackgroundRefresh,
		Logger:            log,
	}
	if tune != nil {
		tune(&opts)
	}
	return tokens.NewManager(opts)
}

// New builds a relay from c; Start makes it listen.
func New(c *configs.Config, log *slog.Logger, hooks Hooks) (*Relay, error) {
	r := &Relay{Config: c, Log: log, Metrics: NewMetrics()}
	var err error
	hooks.Listener = r.Metrics.listenerEvents(hooks.Listener)
	hooks.Upstream = r.Metrics.deliveryEvents(hooks.Upstream)
	tuneTokens := hooks.TuneTokens
	hooks.TuneTokens = func(o *tokens.Options) {
		o.OnRefresh = func(account, result string) { r.Metrics.refreshes.WithLabelValues(account, result).Inc() }
		if tuneTokens != nil {
			tuneTokens(o)
		}
	}

	lc, err := listenerConfig(c, log)
	if err != nil {
		return nil, err
	}
	uc, ups, routes, err := upstreamConfig(c)
	if err != nil {
		return nil, err
	}

	if r.Tokens, err = OpenTokens(c, log, hooks.TuneTokens); err != nil {
		return nil, err
	}

	if hooks.TuneUpstream != nil {
		hooks.TuneUpstream(&uc)
	}
	r.Upstream = relay.NewUpstream(uc, ups, r.Tokens, log, hooks.Upstream)

	bouncer := &relay.Bouncer{Hostname: c.Listen.Hostname, RemoteMTA: func(account string) string {
		for i := range c.Accounts {
			if c.Accounts[i].Name == account {
				return upstreamHost(c.SMTPUpstream(&c.Accounts[i]))
			}
		}
		return upstreamHost(c.Upstream.Addr)
	}, Service: r.Upstream.Service, Mailbox: r.Tokens.Mailbox, Log: log,
		Sent: func(account string) { r.Metrics.bounced.WithLabelValues(account).Inc() }}
	qo := queue.Options{
		Dir: c.Spool.Dir, Deliverer: r.Upstream, Bounce: bouncer.Bounce,
		Workers: c.Delivery.Workers, AccountConcurrency: c.Delivery.Connections,
		Retry:           queue.RetryPolicy{Delays: c.Delivery.Retry, Jitter: c.Delivery.Jitter, MaxAge: c.Delivery.MaxAge},
		FailedRetention: c.Spool.FailedRetention, Logger: log,
	}
	if hooks.TuneQueue != nil {
		hooks.TuneQueue(&qo)
	}
	if r.Queue, err = queue.Open(qo); err != nil {
		r.Upstream.Close()
		return nil, err
	}
	bouncer.Queue = r.Queue
	r.Metrics.reg.MustRegister(newStateCollector(r.Queue, r.Tokens))

	// Token state drives the queue: an account that cannot sign in is
	// paused; reconnecting it delivers its waiting mail at once.
	r.unsubscribe = r.Tokens.Subscribe(func(s tokens.AccountState) {
		switch s.State {
		case tokens.Connected:
			r.Queue.Resume(s.Account)
		default:
			// Every state but connected pauses the account's mail (its
			// messages wait without using up attempts).
			r.Queue.Pause(s.Account, s.Explanation.String())
		}
	})

	r.certAlerts = &certificateAlerts{tokens: r.Tokens, log: log, now: time.Now}
	if c.Alert.WebhookURL != "" {
		hook, stop := webhook(c.Alert.WebhookURL, log)
		publicURL := AdminPublicURL(c)
		cancel := r.Tokens.Subscribe(func(s tokens.AccountState) { hook(s.Account, stateAlert(s, publicURL)) })
		r.certAlerts.notify = func(s tokens.AccountState) { hook(s.Account, certificateAlert(s, publicURL)) }
		prev := r.unsubscribe
		r.unsubscribe = func() { prev(); cancel(); stop() }
	}

	r.Listener = relay.NewListener(lc, r.Queue, relay.NewRouter(routes), log, hooks.Listener)
	if c.Inbound.Enabled() {
		if r.Inbound, err = newInbound(c, lc, uc, r.Tokens, r.Metrics, log); err != nil {
			r.Queue.Close(context.Background())
			r.Upstream.Close()
			return nil, err
		}
	}

	r.AdminToken = c.Admin.Token
	if r.AdminToken == "" {
		if r.AdminToken, err = tokens.LoadOrCreateAdminToken(tokens.AdminTokenPath(c.Keysafe.Path), log); err != nil {
			r.Queue.Close(context.Background())
			r.Upstream.Close()
			return nil, err
		}
	}
	var inboundSessions func() map[string]map[string]int
	if r.Inbound != nil {
		inboundSessions = r.Inbound.Sessions
	}
	adm, err := admin.New(admin.Options{
		Token: r.AdminToken, PublicURL: AdminPublicURL(c), Version: hooks.Version,
		Queue: r.Queue, Accounts: accounts{r.Tokens, r.Upstream}, Metrics: r.Metrics.Handler(),
		ListenerUp: func() error { return r.Listener.Accepting() },
		Explain: func(rep queue.Reply, account, sender string) string {
			return relay.ExplainReplyFrom(r.Upstream.Service(account), rep, r.Tokens.Mailbox(account), sender)
		},
		Check: func(ctx context.Context, account string) admin.CheckResult {
			ctx, cancel := context.WithTimeout(ctx, time.Minute) // within the admin server's write timeout
			defer cancel()
			return r.Upstream.Check(ctx, account, r.Tokens.State(account).ConsentedBy)
		},
		InboundSessions: inboundSessions,
		Log:             log,
	})
	if err != nil {
		r.Queue.Close(context.Background())
		r.Upstream.Close()
		return nil, fmt.Errorf("admin.token: %w", err)
	}
	r.Admin = adm
	return r, nil
}

// Start listens on listen.addr and admin.addr (and inbound.imap.addr and
// inbound.pop3.addr when set) and starts background work.
func (r *Relay) Start() error {
	type want struct {
		key, addr string
		ln        *net.Listener
	}
	var smtpLn, adminLn net.Listener
	wants := []want{{"listen.addr", r.Config.Listen.Addr, &smtpLn}, {"admin.addr", r.Config.Admin.Addr, &adminLn}}
	if r.Inbound != nil && r.Config.Inbound.IMAP.Addr != "" {
		wants = append(wants, want{"inbound.imap.addr", r.Config.Inbound.IMAP.Addr, &r.imapLn})
	}
	if r.Inbound != nil && r.Config.Inbound.POP3.Addr != "" {
		wants = append(wants, want{"inbound.pop3.addr", r.Config.Inbound.POP3.Addr, &r.pop3Ln})
	}
	for i, w := range wants {
		ln, err := net.Listen("tcp", w.addr)
		if err != nil {
			for _, o := range wants[:i] {
				(*o.ln).Close()
				*o.ln = nil
			}
			return fmt.Errorf("%s %s: %w", w.key, w.addr, err)
		}
		*w.ln = ln
	}
	r.StartWith(smtpLn, adminLn)
	return nil
}

// StartWith serves on listeners the caller opened (tests and the demo,
// which need the ports before the relay is built).
func (r *Relay) StartWith(smtpLn, adminLn net.Listener) {
	r.smtpLn, r.adminLn = smtpLn, adminLn
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	// Bounded in time, size and number: an unauthenticated client can hold
	// neither a connection nor memory for long (README, Security).
	r.adminLn = admin.LimitListener(adminLn, AdminMaxConns)
	r.adminSrv = &http.Server{Handler: r.Admin, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 32 << 10}
	r.wg.Add(4)
	go func() { defer r.wg.Done(); r.Tokens.Run(ctx) }()
	go func() { defer r.wg.Done(); r.certAlerts.run(ctx) }()
	go func() {
		defer r.wg.Done()
		if err := r.Listener.Serve(r.smtpLn); err != nil {
			r.Log.Error("smtp listener stopped", "error", err.Error())
		}
	}()
	go func() {
		defer r.wg.Done()
		if err := r.adminSrv.Serve(r.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.Log.Error("admin server stopped", "error", err.Error())
		}
	}()
	attrs := []any{"smtp", r.SMTPAddr(), "admin", AdminPublicURL(r.Config), "admin_listen", r.AdminAddr(), "spool", r.Config.Spool.Dir, "accounts", len(r.Config.Accounts)}
	for _, in := range []struct {
		name  string
		ln    net.Listener
		serve func(net.Listener) error
	}{{"imap", r.imapLn, r.serveIMAP}, {"pop3", r.pop3Ln, r.servePOP3}} {
		if in.ln == nil {
			continue
		}
		attrs = append(attrs, in.name, in.ln.Addr().String())
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := in.serve(in.ln); err != nil {
				r.Log.Error(in.name+" listener stopped", "error", err.Error())
			}
		}()
	}
	r.Log.Info("oauthrelay started", attrs...)
}

// SMTPAddr is where the listener listens (after Start).
func (r *Relay) SMTPAddr() string { return r.smtpLn.Addr().String() }

// AdminAddr is where the admin server listens (after Start).
func (r *Relay) AdminAddr() string { return r.adminLn.Addr().String() }

// Shutdown stops accepting mail, lets SMTP sessions in progress finish and
// deliveries in flight end (until ctx is done), and closes the queue so the
// next start resumes every message.
func (r *Relay) Shutdown(ctx context.Context) error {
	var errs []error
	if r.Listener != nil && r.smtpLn != nil {
		if err := r.Listener.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("smtp sessions cut at the deadline: %w", err))
		}
	}
	if r.adminSrv != nil {
		r.adminSrv.Shutdown(ctx)
	}
	if r.Inbound != nil {
		r.Inbound.Close() // IMAP sessions idle for hours: they are cut, their clients reconnect
	}
	if r.unsubscribe != nil {
		r.unsubscribe()
	}
	r.Queue.Close(ctx)
	r.Upstream.Close()
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	return errors.Join(errs...)
}

// Abandon stops the relay without any clean-up, as a crash would leave it
// (tests only): listeners close, nothing is flushed or finished.
func (r *Relay) Abandon() {
	r.smtpLn.Close()
	r.adminLn.Close()
	for _, ln := range []net.Listener{r.imapLn, r.pop3Ln} {
		if ln != nil {
			ln.Close()
		}
	}
	if r.cancel != nil {
		r.cancel()
	}
}

// upstreamHost is the host part of upstream.addr.
func upstreamHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// listenerConfig is the SMTP listener's part of the configuration.
func listenerConfig(c *configs.Config, log *slog.Logger) (relay.ListenerConfig, error) {
	var err error
	lc := relay.ListenerConfig{
		Hostname: c.Listen.Hostname, MaxMessageBytes: c.Listen.MaxMessageBytes,
		MaxRecipients: c.Listen.MaxRecipients, MaxSessions: c.Listen.MaxSessions,
		MaxSessionsPerClient: c.Listen.SessionsPerClient(), MaxJunkCommands: c.Listen.MaxJunkCommands,
		MaxSessionTime: c.Listen.MaxSessionTime, MaxDataTime: c.Listen.DataTime(),
		ReadTimeout: c.Listen.ReadTimeout, WriteTimeout: c.Listen.WriteTimeout,
		AuthRequired:      c.Listen.Auth.Required,
		NullSenderAccount: c.NullSenderAccount(),
	}
	for _, n := range c.Listen.AllowedNetworks {
		p, err := configs.ParseNetwork(n)
		if err != nil {
			return lc, fmt.Errorf("listen.allowed_networks: %q: %w", n, err)
		}
		lc.AllowedNetworks = append(lc.AllowedNetworks, p)
	}
	if c.Listen.Auth.UsersFile != "" {
		if lc.Users, err = relay.LoadUsers(c.Listen.Auth.UsersFile); err != nil {
			return lc, err
		}
	}
	if c.Listen.TLS.CertFile != "" {
		r, err := newCertReloader(c.Listen.TLS.CertFile, c.Listen.TLS.KeyFile, log)
		if err != nil {
			return lc, err
		}
		lc.TLS = &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12}
	}
	return lc, nil
}

// upstreamConfig is the upstream's part: where Microsoft 365 is, how to
// trust it, the pacing, and each account's mailbox and routing.
func upstreamConfig(c *configs.Config) (relay.UpstreamConfig, []relay.UpstreamAccount, []relay.Route, error) {
	var uc relay.UpstreamConfig
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if c.Upstream.CAFile != "" {
		pem, err := credfile.Read(c.Upstream.CAFile)
		if err != nil {
			return uc, nil, nil, fmt.Errorf("upstream.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return uc, nil, nil, fmt.Errorf("upstream.ca_file %s: no PEM certificate in it", c.Upstream.CAFile)
		}
	}
	uc = relay.UpstreamConfig{
		Addr: c.Upstream.Addr, TLS: c.Upstream.TLS, Hostname: c.Upstream.Hostname, RootCAs: roots,
		InsecureAllowPlaintext: c.Upstream.InsecureAllowPlaintext,
		Connections:            c.Delivery.Connections, RatePerMinute: c.Delivery.RatePerMinute,
		MessagesPerConnection: c.Delivery.MessagesPerConnection, IdleTimeout: c.Delivery.IdleTimeout,
		DialTimeout: c.Delivery.DialTimeout, CommandTimeout: c.Delivery.CommandTimeout,
	}
	var ups []relay.UpstreamAccount
	var routes []relay.Route
	for _, a := range c.Accounts {
		ups = append(ups, relay.UpstreamAccount{Name: a.Name, Mailbox: a.Mailbox, Rewrite: a.RewriteSender, Addr: c.SMTPUpstream(&a),
			Unpaced: a.Kind == configs.KindHVE, Service: serviceName(&a)})
		routes = append(routes, relay.Route{Account: a.Name, Patterns: a.Senders})
	}
	return uc, ups, routes, nil
}

// serviceName is how a's provider is named in logs, checks and bounces.
func serviceName(a *configs.Account) string {
	if a.Provider == configs.ProviderGoogle {
		return "Gmail"
	}
	return "Microsoft 365"
}

// hveKind is the account kind the status shows: "hve", or "" for a mailbox.
func hveKind(kind string) string {
	if kind == configs.KindHVE {
		return kind
	}
	return ""
}
