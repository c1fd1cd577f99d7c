package tokens

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"
)

// Flows.
const (
	FlowAuthorizationCode = "authorization_code"
	FlowDeviceCode        = "device_code"
	FlowClientCredentials = "client_credentials"
)

// DelegatedScopes are what a sign-in for protocols asks for in the global
// Microsoft cloud (Account.scopes has the rule): openid, offline_access
// and one Exchange Online scope per protocol. No protocols means smtp.
func DelegatedScopes(protocols ...string) []string {
	return Account{Protocols: protocols}.scopes()
}

// AppOnlyScopes are what a client-credentials token asks for in the
// global Microsoft cloud.
func AppOnlyScopes() []string { return Account{}.appScopes() }

// Account is one Microsoft 365 mailbox's app registration.
type Account struct {
	Name         string
	Tenant       string
	ClientID     string
	ClientSecret string
	Flow         string
	Mailbox      string
	Authority    string // https://login.microsoftonline.com
	// Protocols the token is for (smtp, imap, pop3); nil means smtp.
	Protocols []string
	// Provider is "microsoft" (or "") or "google".
	Provider string
	// Cloud is the Microsoft cloud (global, usgov, usgov-dod, china; ""
	// is global), and Kind "hve" for a High Volume Email account (""
	// a mailbox), for the status page.
	Cloud, Kind string
	// Resource names delegated scopes (Resource + "/SMTP.Send"; "" is the
	// global cloud's https://outlook.office.com); AppResource is what an
	// app-only token asks for (+ "/.default"; "" is
	// https://outlook.office365.com). Microsoft only.
	Resource, AppResource string
	// CertFile and KeyFile (PEM) sign an app-only account in with a
	// certificate (a client assertion) instead of ClientSecret.
	CertFile, KeyFile string
	// ServiceAccountFile is a Google service account's JSON key: the
	// account signs in app-only as Mailbox (domain-wide delegation).
	ServiceAccountFile string
}

// delegated reports whether the account signs in as a user (a refresh
// token from Connect or device code), not app-only.
func (a Account) delegated() bool {
	return a.Flow != FlowClientCredentials && a.Flow != FlowServiceAccount
}

// certificate reports whether the account signs in with a certificate.
func (a Account) certificate() bool { return a.Flow == FlowClientCredentials && a.CertFile != "" }

// credentialFiles reports whether the account signs in with files the
// relay reads at every token request: a certificate pair, or a Google
// service account's key.
func (a Account) credentialFiles() bool { return a.certificate() || a.Flow == FlowServiceAccount }

// Credential names how the account signs in, as the status page and
// `oauthrelay accounts` show it: "delegated sign-in", "client secret",
// "certificate" or "service account".
func (a Account) Credential() string {
	switch {
	case a.Flow == FlowServiceAccount:
		return "service account"
	case a.certificate():
		return "certificate"
	case !a.delegated():
		return "client secret"
	}
	return "delegated sign-in"
}

func (a Account) endpoint() oauth2.Endpoint {
	if a.google() {
		return a.googleEndpoint()
	}
	base := strings.TrimRight(a.Authority, "/") + "/" + a.Tenant + "/oauth2/v2.0"
	return oauth2.Endpoint{
		AuthURL:       base + "/authorize",
		TokenURL:      base + "/token",
		DeviceAuthURL: base + "/devicecode",
		AuthStyle:     oauth2.AuthStyleInParams, // Entra; auto-detect would send every failing request twice
	}
}

// Token is an access token ready for XOAUTH2.
type Token struct {
	AccessToken string
	Expiry      time.Time
	Mailbox     string
}

// Fingerprint identifies a token in logs and status without revealing it.
func Fingerprint(secret string) string {
	if secret == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:4])
}

// AccountState is an account's state for the status page and subscribers.
type AccountState struct {
	Account      string      `json:"account"`
	Mailbox      string      `json:"mailbox"`
	Flow         string      `json:"flow"`
	State        State       `json:"state"`
	Explanation  Explanation `json:"explanation,omitzero"`
	ConsentedBy  string      `json:"consented_by,omitempty"`
	ConsentedAt  time.Time   `json:"consented_at,omitzero"`
	LastRefresh  time.Time   `json:"last_refresh,omitzero"`
	AccessExpiry time.Time   `json:"access_expiry,omitzero"`
	Fingerprint  string      `json:"token_fingerprint,omitempty"`
	// MissingProtocols are protocols the account is configured for whose
	// scope the last sign-in did not grant: reconnect to grant them.
	MissingProtocols []string `json:"missing_protocols,omitempty"`
	// Protocols the account is configured for (accounts[].protocols; smtp
	// when none are listed).
	Protocols []string `json:"protocols,omitempty"`
	// Refused holds, per protocol ("imap", "pop3"), Microsoft's refusal of
	// a fresh token recorded by AuthRefused: that protocol's logins stop
	// until a sign-in or Try again, while the account's mail goes on.
	Refused map[string]Explanation `json:"refused,omitempty"`
	// Sessions are the inbound IMAP/POP3 sessions open now, per protocol;
	// the admin server fills it in (package inbound counts them).
	Sessions map[string]int `json:"sessions,omitempty"`
	// Provider (microsoft, google), Cloud (Microsoft's: global, usgov,
	// usgov-dod, china) and Credential (Account.Credential) come from the
	// configuration.
	Provider   string `json:"provider,omitempty"`
	Cloud      string `json:"cloud,omitempty"`
	Kind       string `json:"kind,omitempty"` // "hve" for High Volume Email
	Credential string `json:"credential,omitempty"`
	// CertificateExpiry is when the client certificate expires (accounts
	// with a certificate, once it has been read); CertificateWarning is
	// set from Options.CertificateWarning before that, and after.
	CertificateExpiry  time.Time `json:"certificate_expiry,omitzero"`
	CertificateWarning string    `json:"certificate_warning,omitempty"`
}

// Options configure a Manager. Timings are fields so tests use milliseconds.
type Options struct {
	Accounts []Account
	Store    Store
	// HTTPClient talks to Entra ID; nil uses one with a 30 s timeout.
	HTTPClient *http.Client
	// RedirectURL is <admin public URL>/oauth/callback.
	RedirectURL string
	// RefreshSkew: an access token is renewed this long before it expires
	// (at most a quarter of its lifetime). Default 5 min.
	RefreshSkew time.Duration
	// BackgroundRefresh renews each delegated refresh token this often.
	// Default 24 h.
	BackgroundRefresh time.Duration
	// WatchInterval: how often accounts that need attention look for a
	// reconnect made by another process (oauthrelay connect). Default 2 s.
	WatchInterval time.Duration
	// TransientRetries are the waits between retries of a transient
	// failure within one token request. Default 1 s, 4 s.
	TransientRetries []time.Duration
	// CertificateWarning: a client certificate that expires within this
	// shows a warning (AccountState.CertificateWarning). Default 30 days.
	CertificateWarning time.Duration
	// OnRefresh, if set, is called after every token request with the
	// result: "ok", "transient" or "refused".
	OnRefresh func(account, result string)
	Logger    *slog.Logger
	Now       func() time.Time
}

// Manager obtains, caches and refreshes tokens for every account.
type Manager struct {
	opts     Options
	log      *slog.Logger
	accounts map[string]*account
	order    []string
	cache    *expirable.LRU[string, cached]
	sf       singleflight.Group

	subMu   sync.Mutex
	subs    map[int]func(AccountState)
	nextSub int

	pendMu  sync.Mutex
	pending map[string]pendingConnect
	devices map[string]*DeviceSignIn // latest device-code sign-in per account
}

type cached struct {
	tok         Token
	usableUntil time.Time
}

type account struct {
	Account
	oauth *oauth2.Config
	cc    *clientcredentials.Config

	mu       sync.Mutex
	state    State
	expl     Explanation
	expiry   time.Time
	issued   time.Time
	lastUsed time.Time
	failedRT string // the refresh token that was refused; not tried again
	// smtpSince: when Microsoft's SMTP login refused the account (its
	// state is SMTPAuthDisabled/Refused); a sign-in after it resumes.
	smtpSince time.Time
	// refused: IMAP/POP3 logins Microsoft refused with a fresh token, by
	// protocol (protocols.go); cleared by a sign-in or Retry.
	refused   map[string]Explanation
	pendingRT string // a rotated refresh token not yet persisted
	timer     *time.Timer
	// certExpiry: the client certificate's NotAfter, as last read.
	// certStamp: its files' sizes and times when a token request with it
	// was refused; a change to them (a new certificate) is retried.
	certExpiry time.Time
	certStamp  string
	// certSeen: the files' stamp when certExpiry was read; a renewed
	// certificate's expiry shows within seconds, not at the next token.
	certSeen string
}

// NewManager sets up token sources for opts.Accounts from opts.Store.
func NewManager(opts Options) (*Manager, error) {
	if opts.Store == nil {
		return nil, errors.New("tokens: Options.Store is required")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.RefreshSkew <= 0 {
		opts.RefreshSkew = 5 * time.Minute
	}
	if opts.BackgroundRefresh <= 0 {
		opts.BackgroundRefresh = 24 * time.Hour
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = 2 * time.Second
	}
	if opts.TransientRetries == nil {
		opts.TransientRetries = []time.Duration{time.Second, 4 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CertificateWarning <= 0 {
		opts.CertificateWarning = 30 * 24 * time.Hour
	}
	m := &Manager{
		opts: opts, log: opts.Logger, accounts: map[string]*account{},
		cache:   expirable.NewLRU[string, cached](1024, nil, 2*time.Hour),
		subs:    map[int]func(AccountState){},
		pending: map[string]pendingConnect{}, devices: map[string]*DeviceSignIn{},
	}
	for _, a := range opts.Accounts {
		if a.Authority == "" {
			a.Authority = "https://login.microsoftonline.com"
		}
		ac := &account{Account: a}
		if a.delegated() {
			ac.oauth = &oauth2.Config{ClientID: a.ClientID, ClientSecret: a.ClientSecret,
				Endpoint: a.endpoint(), RedirectURL: opts.RedirectURL, Scopes: a.scopes()}
			rec, ok, err := opts.Store.Get(a.Name)
			if err != nil {
				return nil, err
			}
			switch {
			case !ok || rec.RefreshToken == "":
				ac.state, ac.expl = NotConnected, notConnected(a)
			case rec.State == NeedsReconnect:
				ac.state, ac.expl, ac.failedRT = NeedsReconnect, Explanation{Title: rec.LastError, Action: "press Connect and sign in as " + a.Mailbox}, rec.RefreshToken
			default:
				ac.state = Connected
			}
		} else {
			ac.cc = &clientcredentials.Config{ClientID: a.ClientID, ClientSecret: a.ClientSecret,
				TokenURL: a.endpoint().TokenURL, Scopes: a.appScopes(), AuthStyle: oauth2.AuthStyleInParams}
			ac.state = Connected
			if a.certificate() {
				// Read now so the status page shows the expiry and a bad
				// pair at once; every token request reads the files again.
				if _, err := m.loadCertificate(ac); err != nil {
					ac.state, ac.expl, ac.certStamp = Misconfigured, explainCertificate(err), certStamp(a)
				}
			}
			if a.Flow == FlowServiceAccount {
				if _, err := ReadServiceAccount(a.ServiceAccountFile); err != nil {
					ac.state, ac.expl, ac.certStamp = Misconfigured, explainCertificate(err), certStamp(a)
				}
			}
		}
		m.accounts[a.Name] = ac
		m.order = append(m.order, a.Name)
	}
	return m, nil
}

func notConnected(a Account) Explanation {
	how := "press Connect on the status page"
	if a.Flow == FlowDeviceCode {
		how = "run: oauthrelay connect " + a.Name + " --device"
	}
	service := "Microsoft 365"
	if a.google() {
		service = "Google"
	}
	return Explanation{Title: "not connected to " + service + " yet", Action: how + " and sign in as " + a.Mailbox}
}

func (m *Manager) account(name string) (*account, error) {
	a, ok := m.accounts[name]
	if !ok {
		return nil, fmt.Errorf("tokens: no account named %q", name)
	}
	return a, nil
}

// Mailbox returns the mailbox an account signs in as.
func (m *Manager) Mailbox(name string) string {
	if a, ok := m.accounts[name]; ok {
		return a.Mailbox
	}
	return ""
}

// Token returns a valid access token for account, from the cache when it
// has one (no network), else after one refresh shared by every concurrent
// caller. An *AccountError means the account needs a person; an error
// wrapping ErrTransient may go away by itself.
func (m *Manager) Token(ctx context.Context, name string) (Token, error) {
	a, err := m.account(name)
	if err != nil {
		return Token{}, err
	}
	now := m.opts.Now()
	if c, ok := m.cache.Get(name); ok && now.Before(c.usableUntil) {
		a.mu.Lock()
		a.lastUsed = now
		a.mu.Unlock()
		return c.tok, nil
	}
	v, err, _ := m.sf.Do(name, func() (any, error) {
		if c, ok := m.cache.Get(name); ok && m.opts.Now().Before(c.usableUntil) {
			return c.tok, nil
		}
		// One caller's cancellation must not fail the others sharing it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		return m.refresh(rctx, a)
	})
	a.mu.Lock()
	a.lastUsed = m.opts.Now()
	a.mu.Unlock()
	if err != nil {
		return Token{}, err
	}
	return v.(Token), nil
}

// Invalidate drops account's cached access token; the next Token call
// fetches a new one (the relay calls it after 535 5.7.3).
func (m *Manager) Invalidate(name string) {
	m.cache.Remove(name)
}

// refresh obtains a new access token, retrying transient failures.
func (m *Manager) refresh(ctx context.Context, a *account) (Token, error) {
	var last error
	for i := 0; ; i++ {
		tok, err := m.refreshOnce(ctx, a)
		if m.opts.OnRefresh != nil {
			var ae *AccountError
			switch {
			case err == nil:
				m.opts.OnRefresh(a.Name, "ok")
			case errors.As(err, &ae):
				m.opts.OnRefresh(a.Name, "refused")
			default:
				m.opts.OnRefresh(a.Name, "transient")
			}
		}
		if err == nil || !errors.Is(err, ErrTransient) || i >= len(m.opts.TransientRetries) {
			if err != nil && errors.Is(err, ErrTransient) {
				m.log.Warn("tokens: refresh failed, will retry later", "account", a.Name, "error", err.Error())
			}
			return tok, err
		}
		last = err
		select {
		case <-ctx.Done():
			return Token{}, fmt.Errorf("%w: %v", last, ctx.Err())
		case <-time.After(m.opts.TransientRetries[i]):
		}
	}
}

func (m *Manager) refreshOnce(ctx context.Context, a *account) (Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, m.opts.HTTPClient)
	var (
		tok *oauth2.Token
		err error
		rec Record
		rt  string
	)
	if a.delegated() {
		var ok bool
		rec, ok, err = m.opts.Store.Get(a.Name)
		if err != nil {
			return Token{}, fmt.Errorf("%w: keysafe: %v", ErrTransient, err)
		}
		a.mu.Lock()
		rt = a.pendingRT
		failed := a.failedRT
		a.mu.Unlock()
		if rt == "" {
			rt = rec.RefreshToken
		}
		if !ok || rt == "" {
			m.setState(a, NotConnected, notConnected(a.Account))
			return Token{}, &AccountError{Account: a.Name, State: NotConnected, Explanation: notConnected(a.Account)}
		}
		if rt == failed {
			a.mu.Lock()
			st, ex := a.state, a.expl
			a.mu.Unlock()
			return Token{}, &AccountError{Account: a.Name, State: st, Explanation: ex}
		}
		tok, err = a.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	} else {
		var cerr error
		if a.Flow == FlowServiceAccount {
			tok, cerr = a.serviceAccountToken(ctx)
			var ce *CertificateError
			if !errors.As(cerr, &ce) {
				err, cerr = cerr, nil // the request's own outcome, classified below
			}
		} else {
			var cc *clientcredentials.Config
			if cc, cerr = m.appCredentials(a); cerr == nil {
				tok, err = cc.Token(ctx)
			}
		}
		if cerr != nil { // a credential file that cannot be used: nothing was sent
			ex := explainCertificate(cerr)
			a.mu.Lock()
			a.certStamp = certStamp(a.Account)
			a.mu.Unlock()
			m.cache.Remove(a.Name)
			m.setState(a, Misconfigured, ex)
			return Token{}, &AccountError{Account: a.Name, State: Misconfigured, Explanation: ex}
		}
	}
	if err != nil {
		st, ex, transient := classify(err, a.Account, m.opts.RedirectURL)
		if transient {
			return Token{}, fmt.Errorf("%w: %s", ErrTransient, ex.Title)
		}
		a.mu.Lock()
		if a.delegated() {
			a.failedRT, a.pendingRT = rt, ""
		}
		if a.credentialFiles() {
			a.certStamp = certStamp(a.Account)
		}
		a.mu.Unlock()
		m.cache.Remove(a.Name)
		if a.delegated() {
			rec.State, rec.LastError = st, ex.String()
			if perr := m.opts.Store.Put(rec); perr != nil {
				m.log.Error("tokens: cannot record account state in keysafe", "account", a.Name, "error", perr.Error())
			}
		}
		m.setState(a, st, ex)
		return Token{}, &AccountError{Account: a.Name, State: st, Explanation: ex}
	}

	now := m.opts.Now()
	if a.delegated() {
		rec.LastRefresh, rec.State, rec.LastError = now, Connected, ""
		if tok.RefreshToken != "" && tok.RefreshToken != rt {
			rec.RefreshToken = tok.RefreshToken
			a.mu.Lock()
			a.pendingRT = tok.RefreshToken // kept in memory until it is on disk
			a.mu.Unlock()
		}
		// Persist the rotated refresh token before the access token that
		// came with it is used: the old one may already be revoked.
		if err := m.opts.Store.Put(rec); err != nil {
			return Token{}, fmt.Errorf("%w: cannot save the new refresh token to the keysafe: %v", ErrTransient, err)
		}
		a.mu.Lock()
		a.pendingRT = ""
		a.mu.Unlock()
	}
	t := m.cacheToken(a, tok, now)
	a.mu.Lock()
	smtp := smtpState(a.state)
	a.mu.Unlock()
	if !smtp {
		// A working token does not undo Microsoft's SMTP refusal: that
		// takes a sign-in or Retry.
		m.setState(a, Connected, Explanation{})
	}
	m.log.Info("tokens: access token obtained", "account", a.Name, "expires", t.Expiry.Format(time.RFC3339), "token", Fingerprint(t.AccessToken))
	return t, nil
}

// cacheToken caches tok and schedules its proactive renewal.
func (m *Manager) cacheToken(a *account, tok *oauth2.Token, now time.Time) Token {
	expiry := tok.Expiry
	if expiry.IsZero() {
		expiry = now.Add(time.Hour)
	}
	life := expiry.Sub(now)
	skew := min(m.opts.RefreshSkew, life/4)
	usable := expiry.Add(-skew)
	t := Token{AccessToken: tok.AccessToken, Expiry: expiry, Mailbox: a.Mailbox}
	m.cache.Add(a.Name, cached{tok: t, usableUntil: usable})
	a.mu.Lock()
	a.expiry, a.issued = expiry, now
	a.failedRT = ""
	if a.timer != nil {
		a.timer.Stop()
	}
	// Renew shortly before the cached token stops being usable, if the
	// account is in use, so a message never waits for a refresh.
	lead := min(time.Minute, usable.Sub(now)/5)
	issued := now
	a.timer = time.AfterFunc(usable.Sub(now)-lead, func() { m.proactive(a, issued) })
	a.mu.Unlock()
	return t
}

func (m *Manager) proactive(a *account, issued time.Time) {
	a.mu.Lock()
	used := a.lastUsed.After(issued)
	current := a.issued.Equal(issued)
	a.mu.Unlock()
	if !used || !current {
		return
	}
	m.sf.Do(a.Name, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return m.refresh(ctx, a)
	})
}

// ForceRefresh renews account's tokens now, bypassing the cache.
func (m *Manager) ForceRefresh(ctx context.Context, name string) error {
	a, err := m.account(name)
	if err != nil {
		return err
	}
	_, err, _ = m.sf.Do(name, func() (any, error) { return m.refresh(ctx, a) })
	return err
}

// Run renews delegated refresh tokens every BackgroundRefresh (so the
// 90-day inactivity expiry never hits a quiet relay) and picks up reconnects
// made by another process. It returns when ctx is done.
func (m *Manager) Run(ctx context.Context) {
	watch := time.NewTicker(m.opts.WatchInterval)
	defer watch.Stop()
	renew := time.NewTicker(min(m.opts.BackgroundRefresh/4, time.Hour))
	defer renew.Stop()
	m.renewStale(ctx)
	for {
		select {
		case <-ctx.Done():
			m.stopTimers()
			return
		case <-watch.C:
			m.watchReconnects(ctx)
		case <-renew.C:
			m.renewStale(ctx)
		}
	}
}

func (m *Manager) stopTimers() {
	for _, a := range m.accounts {
		a.mu.Lock()
		if a.timer != nil {
			a.timer.Stop()
		}
		a.mu.Unlock()
	}
}

func (m *Manager) renewStale(ctx context.Context) {
	for _, name := range m.order {
		a := m.accounts[name]
		if !a.delegated() {
			continue
		}
		rec, ok, err := m.opts.Store.Get(name)
		if err != nil || !ok || rec.RefreshToken == "" || rec.State == NeedsReconnect {
			continue
		}
		if m.opts.Now().Sub(rec.LastRefresh) >= m.opts.BackgroundRefresh {
			if err := m.ForceRefresh(ctx, name); err != nil {
				m.log.Warn("tokens: background refresh failed", "account", name, "error", err.Error())
			} else {
				m.log.Info("tokens: refresh token renewed in the background", "account", name)
			}
		}
	}
}

// watchReconnects retries accounts that need attention once their keysafe
// record holds a refresh token other than the one that failed.
func (m *Manager) watchReconnects(ctx context.Context) {
	for _, name := range m.order {
		a := m.accounts[name]
		a.mu.Lock()
		st, failed, smtpSince, seen := a.state, a.failedRT, a.smtpSince, a.certSeen
		a.mu.Unlock()
		if a.certificate() {
			if now := certStamp(a.Account); now != seen {
				c, err := LoadCertificate(a.CertFile, a.KeyFile)
				a.mu.Lock()
				a.certSeen = now
				if err == nil {
					a.certExpiry = c.Leaf.NotAfter
				}
				a.mu.Unlock()
			}
		}
		if a.credentialFiles() && st == Misconfigured {
			m.retryNewCertificate(ctx, a)
			continue
		}
		if !a.delegated() || st == Connected {
			continue
		}
		rec, ok, err := m.opts.Store.Get(name)
		if err != nil || !ok || rec.RefreshToken == "" || rec.RefreshToken == failed {
			continue
		}
		if smtpState(st) && !rec.ConsentedAt.After(smtpSince) {
			continue // no sign-in since Microsoft refused the login
		}
		if err := m.ForceRefresh(ctx, name); err == nil {
			m.putState(a, Connected, Explanation{}, true)
			m.log.Info("tokens: account reconnected", "account", name)
		}
	}
}

// Subscribe calls f on every state change until the returned cancel.
func (m *Manager) Subscribe(f func(AccountState)) (cancel func()) {
	m.subMu.Lock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = f
	m.subMu.Unlock()
	return func() {
		m.subMu.Lock()
		delete(m.subs, id)
		m.subMu.Unlock()
	}
}

func (m *Manager) setState(a *account, st State, ex Explanation) {
	m.putState(a, st, ex, false)
}

// putState sets an account's state and tells the subscribers (the queue's
// pause, the webhook) when it changed, or always with force: a sign-in or
// Retry resumes the account's mail even if nothing seemed wrong.
func (m *Manager) putState(a *account, st State, ex Explanation, force bool) {
	a.mu.Lock()
	changed := a.state != st || a.expl != ex
	a.state, a.expl = st, ex
	if !smtpState(st) {
		a.smtpSince = time.Time{}
	}
	if force {
		a.refused = nil // a sign-in or Retry: try IMAP and POP3 again too
	}
	a.mu.Unlock()
	if !changed && !force {
		return
	}
	if st == Connected {
		m.log.Info("tokens: account connected", "account", a.Name)
	} else {
		m.log.Warn("tokens: account needs attention", "account", a.Name, "state", string(st), "explanation", ex.String())
	}
	s := m.State(a.Name)
	m.subMu.Lock()
	subs := make([]func(AccountState), 0, len(m.subs))
	for _, f := range m.subs {
		subs = append(subs, f)
	}
	m.subMu.Unlock()
	for _, f := range subs {
		f(s)
	}
}

// State returns account's state.
func (m *Manager) State(name string) AccountState {
	a, ok := m.accounts[name]
	if !ok {
		return AccountState{Account: name}
	}
	a.mu.Lock()
	s := AccountState{Account: a.Name, Mailbox: a.Mailbox, Flow: a.Flow, State: a.state, Explanation: a.expl, AccessExpiry: a.expiry}
	a.mu.Unlock()
	s.Protocols = a.Protocols
	if len(s.Protocols) == 0 {
		s.Protocols = []string{"smtp"}
	}
	s.Refused = m.Refused(name)
	s.Provider, s.Cloud, s.Kind, s.Credential = a.Provider, a.Cloud, a.Kind, a.Credential()
	if s.Provider == "" {
		s.Provider = "microsoft"
	}
	if s.Cloud == "" && s.Provider == "microsoft" {
		s.Cloud = "global"
	}
	a.mu.Lock()
	s.CertificateExpiry = a.certExpiry
	a.mu.Unlock()
	s.CertificateWarning = certificateWarning(s.CertificateExpiry, m.opts.Now(), m.opts.CertificateWarning)
	if c, ok := m.cache.Peek(name); ok {
		s.Fingerprint = Fingerprint(c.tok.AccessToken)
	}
	if a.delegated() {
		if rec, ok, err := m.opts.Store.Get(name); err == nil && ok {
			s.ConsentedBy, s.ConsentedAt, s.LastRefresh = rec.ConsentedBy, rec.ConsentedAt, rec.LastRefresh
			s.MissingProtocols = missingProtocols(a.Account, rec.Scopes)
		}
	}
	return s
}

// States returns every account's state, in configuration order.
func (m *Manager) States() []AccountState {
	out := make([]AccountState, 0, len(m.order))
	for _, name := range m.order {
		out = append(out, m.State(name))
	}
	return out
}

// Account returns account's configuration.
func (m *Manager) Account(name string) (Account, bool) {
	a, ok := m.accounts[name]
	if !ok {
		return Account{}, false
	}
	return a.Account, true
}

// storeGrant keeps a new grant from Connect or the device flow.
func (m *Manager) storeGrant(a *account, tok *oauth2.Token) (string, error) {
	upn := idTokenUPN(tok)
	now := m.opts.Now()
	rec := Record{Account: a.Name, RefreshToken: tok.RefreshToken, ConsentedBy: upn, ConsentedAt: now,
		LastRefresh: now, State: Connected}
	if s, ok := tok.Extra("scope").(string); ok {
		rec.Scopes = strings.Fields(s)
	}
	if rec.RefreshToken == "" {
		ex := Explanation{Title: "Microsoft returned no refresh token",
			Action: "add the offline_access permission to the app registration and connect again"}
		if a.google() {
			ex = Explanation{Title: "Google returned no refresh token",
				Action: "remove the relay's access at myaccount.google.com/permissions (Google gives a refresh token at the first consent only), then connect again"}
		}
		return "", &AccountError{Account: a.Name, State: Misconfigured, Explanation: ex}
	}
	if err := m.opts.Store.Put(rec); err != nil {
		return "", fmt.Errorf("cannot save the sign-in to the keysafe: %w", err)
	}
	a.mu.Lock()
	a.pendingRT = ""
	a.mu.Unlock()
	m.cacheToken(a, tok, now)
	m.putState(a, Connected, Explanation{}, true)
	m.log.Info("tokens: account connected by sign-in", "account", a.Name, "consented_by", upn)
	if w := WrongUser(upn, a.Mailbox); w != "" {
		m.log.Warn("tokens: "+w, "account", a.Name)
	}
	return upn, nil
}

// WrongUser is the warning for a sign-in by someone other than the
// account's mailbox ("" when it is the mailbox, or unknown). A warning,
// not a refusal: a delegate with Send As on a shared mailbox is legitimate.
func WrongUser(signedInAs, mailbox string) string {
	if signedInAs == "" || strings.EqualFold(signedInAs, mailbox) {
		return ""
	}
	return fmt.Sprintf("signed in as %s; this account sends as %s: %s needs Send As / Full Access on %s (shared mailbox), or sign in as %s",
		signedInAs, mailbox, signedInAs, mailbox, mailbox)
}

// SMTPAuthRefused records that Microsoft refused the account's XOAUTH2
// login with a fresh token (535 5.7.3, 535 5.7.139): the account needs
// attention, its mail waits, the webhook fires. It returns the
// explanation. The account resumes on a sign-in or Retry.
func (m *Manager) SMTPAuthRefused(name string, code int, enhanced string) Explanation {
	a, ok := m.accounts[name]
	if !ok {
		return ExplainSMTPAuth(code, enhanced, Account{Name: name}, "")
	}
	var by string
	if rec, ok, err := m.opts.Store.Get(name); err == nil && ok {
		by = rec.ConsentedBy
	}
	ex := ExplainSMTPAuth(code, enhanced, a.Account, by)
	st := SMTPAuthRefused
	if enhanced == "5.7.139" {
		st = SMTPAuthDisabled
	}
	a.mu.Lock()
	if !smtpState(a.state) {
		a.smtpSince = m.opts.Now()
	}
	a.mu.Unlock()
	m.setState(a, st, ex)
	return ex
}

// Retry is the admin's "try again" for an account that needs attention,
// after fixing something on Microsoft's side without signing in again: it
// clears a refusal, fetches a fresh token, and on success resumes the
// account's mail at once (even if its state seemed fine).
func (m *Manager) Retry(ctx context.Context, name string) (AccountState, error) {
	a, err := m.account(name)
	if err != nil {
		return AccountState{}, err
	}
	a.mu.Lock()
	a.failedRT = ""
	if smtpState(a.state) {
		a.state, a.expl = Connected, Explanation{} // let the refresh below decide
	}
	a.mu.Unlock()
	m.cache.Remove(name)
	if err := m.ForceRefresh(ctx, name); err != nil {
		return m.State(name), err
	}
	m.putState(a, Connected, Explanation{}, true)
	m.log.Info("tokens: account retried by the admin; its mail resumes", "account", name)
	return m.State(name), nil
}

// idTokenUPN reads the signed-in user's name from the id token. The token
// came straight from the token endpoint over TLS, so its signature need not
// be checked for this display-only use (OpenID Connect Core 3.1.3.7).
func idTokenUPN(tok *oauth2.Token) string {
	raw, _ := tok.Extra("id_token").(string)
	parts := strings.Split(raw, ".")
	if len(parts) < 2 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		PreferredUsername string `json:"preferred_username"`
		UPN               string `json:"upn"`
		Email             string `json:"email"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	for _, s := range []string{c.PreferredUsername, c.UPN, c.Email} {
		if s != "" {
			return s
		}
	}
	return ""
}

// missingProtocols lists the protocols whose scope granted lacks (nothing
// when the grant's scopes are unknown).
func missingProtocols(a Account, granted []string) []string {
	if len(granted) == 0 || (a.google() && googleGranted(granted)) {
		return nil
	}
	var missing []string
	for _, p := range a.Protocols {
		sc := a.protocolScope(p)
		if sc == "" {
			continue
		}
		if !slices.ContainsFunc(granted, func(g string) bool { return strings.EqualFold(g, sc) }) {
			missing = append(missing, p)
		}
	}
	return missing
}
