package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/lockout"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// Protocol names, as in accounts[].protocols, logs and metrics.
const (
	IMAP = "imap"
	POP3 = "pop3"
)

// TokenSource signs the relay in to Exchange Online; *tokens.Manager is one.
type TokenSource interface {
	// AuthFor returns a credential for account's mailbox for protocol, or
	// an *tokens.AccountError when the account needs attention.
	AuthFor(ctx context.Context, account, protocol string) (tokens.Credential, error)
	// Invalidate drops account's cached access token.
	Invalidate(account string)
	// AuthRefused records that Microsoft refused a fresh token for
	// protocol; reply is Microsoft's answer.
	AuthRefused(account, protocol, reply string) tokens.Explanation
}

// Login results, for Events.Login and the metric.
const (
	LoginOK          = "ok"
	LoginBadPassword = "bad_password" // wrong local password or unknown user
	LoginLockedOut   = "locked_out"   // the address is locked out (internal/lockout)
	LoginNotPrivate  = "not_private"  // login from a non-loopback address
	LoginBusy        = "busy"         // the account has max connections open
	LoginUnavailable = "unavailable"  // no token, or upstream unreachable
	LoginRefused     = "refused"      // Microsoft refused a fresh token
)

// Session is one relayed session, reported when it ends. It holds no
// password and no token.
type Session struct {
	Protocol string
	Client   string // client address
	User     string // local user
	Account  string
	Duration time.Duration // from login to close
	// BytesIn went from the client to Microsoft, BytesOut back.
	BytesIn, BytesOut int64
}

// Events lets the caller observe the proxies (metrics). Either may be nil.
type Events struct {
	Login   func(protocol, result string)
	Session func(Session)
}

// Options configure a Server. Timings are fields so tests use milliseconds.
type Options struct {
	Users  *Users
	Tokens TokenSource
	// AllowedNetworks may connect (listen.allowed_networks); others are
	// refused before any command.
	AllowedNetworks []netip.Prefix
	// IMAPUpstream and POP3Upstream are host:port of Exchange Online's
	// IMAP and POP3 servers (implicit TLS), for every account, unless
	// UpstreamFor names one for the account (its provider and cloud).
	IMAPUpstream, POP3Upstream string
	UpstreamFor                func(account, protocol string) string
	// TLS, when set, is listen.tls's certificate: offered with STARTTLS
	// (IMAP) and STLS (POP3), after which a client on another host may log
	// in. Without it only loopback may log in.
	TLS *tls.Config
	// RootCAs verify the upstream's certificate (system roots plus
	// upstream.ca_file); nil uses the system roots.
	RootCAs *x509.CertPool
	// MaxConnectionsPerAccount caps the sessions open at once per account,
	// both protocols. Exchange Online limits concurrent IMAP/POP connections
	// per mailbox, but ../shared/M365.md gives no documented figure; 16 is
	// the relay's own default (Exchange Server's per-user default), not
	// Microsoft's. Default 16.
	MaxConnectionsPerAccount int
	// LoginTimeout bounds each client read before login. Default 1 min.
	LoginTimeout time.Duration
	// LoginPhaseMax bounds the whole login phase. Default 2 min.
	LoginPhaseMax time.Duration
	// DialTimeout bounds connecting to the upstream with TLS; UpstreamTimeout
	// each upstream reply during its login. Defaults 30 s each.
	DialTimeout, UpstreamTimeout time.Duration
	// TokenTimeout bounds getting a credential. Default 1 min.
	TokenTimeout time.Duration
	// CloseGrace: once one side of a relayed session has closed, the other
	// has this long to finish before both are closed. Default 30 s.
	CloseGrace time.Duration
	// LoginCacheTTL is how long a successful local login is remembered
	// (logincache.go), so a client that reconnects often skips bcrypt.
	// Default 5 min; negative turns the cache off.
	LoginCacheTTL time.Duration
	// LockoutBase and LockoutMax: the first and longest lock of an address
	// after failed logins. Defaults 1 s and 15 min.
	LockoutBase, LockoutMax time.Duration
	Events                  Events
	Logger                  *slog.Logger
}

// Server runs the IMAP and POP3 proxies.
type Server struct {
	opts    Options
	log     *slog.Logger
	lockout *lockout.Lockout[netip.Addr]
	logins  *loginCache
	// upTLS holds one TLS configuration per upstream host, all sharing
	// one session cache: a reconnect resumes TLS instead of verifying the
	// certificate chain again, and a connection does not carry a clone of
	// its own (which tls.Dialer makes when ServerName is unset).
	upTLS    map[string]*tls.Config
	tlsCache tls.ClientSessionCache
	// ctx ends with Close, so a login waiting for a token or a dial does
	// not hold Close up.
	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	perAccount  map[string]int
	preLogin    map[netip.Addr]int        // connections in the login phase, per client address
	preLoginAll int                       // and in all
	open        map[string]map[string]int // account → protocol → relayed sessions
	conns       map[net.Conn]struct{}
	listeners   []net.Listener
	closed      bool
	wg          sync.WaitGroup
}

// New returns a Server for opts.
func New(opts Options) *Server {
	if opts.MaxConnectionsPerAccount <= 0 {
		opts.MaxConnectionsPerAccount = 16
	}
	if opts.LoginTimeout <= 0 {
		opts.LoginTimeout = time.Minute
	}
	if opts.LoginPhaseMax <= 0 {
		opts.LoginPhaseMax = 2 * time.Minute
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 30 * time.Second
	}
	if opts.UpstreamTimeout <= 0 {
		opts.UpstreamTimeout = 30 * time.Second
	}
	if opts.TokenTimeout <= 0 {
		opts.TokenTimeout = time.Minute
	}
	if opts.CloseGrace <= 0 {
		opts.CloseGrace = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LoginCacheTTL == 0 {
		opts.LoginCacheTTL = 5 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{opts: opts, log: opts.Logger, lockout: lockout.New[netip.Addr](freeFailures, opts.LockoutBase, opts.LockoutMax),
		logins: newLoginCache(opts.LoginCacheTTL, 10000, time.Now),
		upTLS:  map[string]*tls.Config{}, tlsCache: tls.NewLRUClientSessionCache(64),
		ctx: ctx, cancel: cancel, perAccount: map[string]int{}, preLogin: map[netip.Addr]int{}, open: map[string]map[string]int{}, conns: map[net.Conn]struct{}{}}
}

// ServeIMAP accepts IMAP clients on ln until Close.
func (s *Server) ServeIMAP(ln net.Listener) error { return s.serve(ln, IMAP) }

// ServePOP3 accepts POP3 clients on ln until Close.
func (s *Server) ServePOP3(ln net.Listener) error { return s.serve(ln, POP3) }

func (s *Server) serve(ln net.Listener, protocol string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		if !s.track(c) {
			c.Close()
			continue
		}
		// Everything slow (bcrypt, tokens, dialling) happens in the
		// session's goroutine, never here.
		go s.serveConn(c, protocol, func() { s.untrack(c); s.wg.Done() })
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops accepting, cuts every session (an IMAP session can idle for
// hours; its client reconnects) and waits for their goroutines.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// allowed reports whether a client may connect, and whether it is on
// loopback (the only place a password may come from without TLS).
func (s *Server) allowed(c net.Conn) (ip netip.Addr, ok, loopback bool) {
	if ip = remoteIP(c); !ip.IsValid() {
		return ip, false, false
	}
	for _, p := range s.opts.AllowedNetworks {
		if p.Contains(ip) {
			return ip, true, ip.IsLoopback()
		}
	}
	return ip, false, false
}

// privacyHint tells a client refused for want of a private connection
// what to do; starttls is the protocol's command.
func (s *Server) privacyHint(starttls string) string {
	if s.opts.TLS == nil {
		return "connect from this machine (loopback); for other machines, the relay's admin must set listen.tls"
	}
	return "use " + starttls + " first, or connect from this machine (loopback)"
}

// startTLS runs the server side of a TLS handshake on c, within
// LoginTimeout, after STARTTLS or STLS was answered.
func (s *Server) startTLS(c net.Conn, protocol string, ip netip.Addr) (*tls.Conn, error) {
	tc := tls.Server(c, s.opts.TLS)
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.LoginTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Info("inbound: TLS handshake failed", "protocol", protocol, "client", ip.String(), "error", err.Error())
		return nil, err
	}
	return tc, nil
}

func (s *Server) event(protocol, result string) {
	if s.opts.Events.Login != nil {
		s.opts.Events.Login(protocol, result)
	}
}

// checkPassword is the local half of a login: the lockout, then the cache
// of recent successful logins, then bcrypt.
// It returns the user's account, or the login result that refuses it.
func (s *Server) checkPassword(ip netip.Addr, protocol, user, pass string) (account, result string) {
	if _, locked := s.lockout.Locked(ip); locked {
		return "", LoginLockedOut
	}
	if account, ok := s.logins.get(user, pass); ok {
		s.lockout.Success(ip, user)
		return account, ""
	}
	account, ok := s.opts.Users.check(user, pass)
	if !ok {
		if d, n := s.lockout.Fail(ip, user); d > 0 {
			s.log.Warn("inbound: address locked out after failed logins; every IMAP/POP3 login from it is refused until the lock ends",
				"client", ip.String(), "protocol", protocol, "failed_logins", n, "locked_for", d.String())
		}
		if s.opts.Users.known(user) {
			s.log.Info("inbound: local login refused", "protocol", protocol, "client", ip.String(), "user", user)
		} else {
			// Not named: it may be a password typed into the user field.
			s.log.Info("inbound: local login refused", "protocol", protocol, "client", ip.String(), "user", "(unknown user)")
		}
		return "", LoginBadPassword
	}
	s.logins.put(user, pass, account)
	s.lockout.Success(ip, user)
	return account, ""
}

// acquire takes one of account's session slots; release gives it back.
func (s *Server) acquire(account string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perAccount[account] >= s.opts.MaxConnectionsPerAccount {
		return false
	}
	s.perAccount[account]++
	return true
}

func (s *Server) release(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perAccount[account]--; s.perAccount[account] <= 0 {
		delete(s.perAccount, account)
	}
}

// loginReplies are a protocol's answers to a login, by outcome.
type loginReplies struct {
	lockedOut, badPassword, busy string
	// unavailable answers a sign-in upstream that failed (msg says why);
	// closing: the session ends after it.
	unavailable func(msg string, closing bool) string
}

// login is what a login is in both protocols: the local password (with
// the lockout), one of the account's session slots, the sign-in upstream —
// upLogin signs in and returns the line that answers the client's login —
// the answer, and the hand-off of the session to the relay (rel). done:
// the session is over (relayed, or ended); failed: a wrong password.
// write writes one line to the client (c, r: its connection and line
// reader now, after STARTTLS if any).
func (s *Server) login(protocol string, c net.Conn, r *lineReader, ip netip.Addr, write func(string, ...any) error,
	user, pass string, replies loginReplies,
	upLogin func(*upstreamConn, tokens.Credential) (okLine, refusal string, err error)) (rel *relay, done, failed bool) {
	account, result := s.checkPassword(ip, protocol, user, pass)
	switch result {
	case LoginLockedOut:
		s.event(protocol, result)
		write("%s", replies.lockedOut)
		return nil, false, false
	case LoginBadPassword:
		s.event(protocol, result)
		write("%s", replies.badPassword)
		return nil, false, true
	}
	if !s.acquire(account) {
		s.event(protocol, LoginBusy)
		s.log.Warn("inbound: too many connections for the account", "protocol", protocol, "account", account, "client", ip.String(), "max", s.opts.MaxConnectionsPerAccount)
		write("%s", replies.busy)
		return nil, false, false
	}
	defer func() {
		if rel == nil { // the slot goes with the session, if there is one
			s.release(account)
		}
	}()
	var ok string
	u, fail := s.signIn(protocol, s.upstream(protocol, account), account, func(u *upstreamConn, cred tokens.Credential) (string, error) {
		var refusal string
		var err error
		ok, refusal, err = upLogin(u, cred)
		return refusal, err
	})
	if fail != nil {
		s.event(protocol, fail.kind)
		write("%s", replies.unavailable(fail.msg, fail.closeClient))
		return nil, fail.closeClient, false
	}
	s.event(protocol, LoginOK)
	c.SetDeadline(time.Time{})
	if err := write("%s", ok); err != nil {
		s.log.Info("inbound: client left before its login's answer", "protocol", protocol, "client", ip.String(), "user", user, "account", account)
		u.conn.Close()
		return nil, true, false
	}
	return s.handOff(protocol, user, account, c, r, u), true, false
}

// upstreamConn is a TLS connection to Exchange Online during its login.
type upstreamConn struct {
	conn net.Conn
	br   *lineReader
}

// signInFailure says why the relay could not sign in upstream; kind is a
// login result (LoginUnavailable, LoginRefused), msg words for the client.
type signInFailure struct {
	kind string
	msg  string
	// closeClient: the upstream could not be reached or made no sense; the
	// client's connection ends too (IMAP BYE).
	closeClient bool
}

// upstreamLogin signs in on a freshly dialled upstream with cred. It
// returns Microsoft's refusal text when the token was refused (the
// connection is then useless), or an error when the upstream could not be
// spoken to.
type upstreamLogin func(u *upstreamConn, cred tokens.Credential) (refusal string, err error)

// signIn gets the account's credential, dials addr and logs in; a refused
// token is dropped and tried once more fresh, and a second refusal is
// recorded (package comment).
func (s *Server) signIn(protocol, addr, account string, login upstreamLogin) (*upstreamConn, *signInFailure) {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.TokenTimeout)
		cred, err := s.opts.Tokens.AuthFor(ctx, account, protocol)
		cancel()
		if err != nil {
			var ae *tokens.AccountError
			if errors.As(err, &ae) {
				s.log.Warn("inbound: account cannot sign in", "protocol", protocol, "account", account, "state", string(ae.State), "explanation", ae.Explanation.String())
				return nil, &signInFailure{kind: LoginUnavailable, msg: "account " + account + " needs attention at the relay: " + ae.Explanation.Title}
			}
			s.log.Warn("inbound: no token for the account", "protocol", protocol, "account", account, "error", err.Error())
			return nil, &signInFailure{kind: LoginUnavailable, msg: "cannot get a sign-in for " + account + " from Microsoft now; try again later"}
		}
		u, err := s.dial(addr)
		if err != nil {
			s.log.Warn("inbound: upstream unreachable", "protocol", protocol, "account", account, "upstream", addr, "error", err.Error())
			return nil, &signInFailure{kind: LoginUnavailable, msg: "cannot reach Microsoft 365 (" + addr + "); try again later", closeClient: true}
		}
		u.conn.SetDeadline(time.Now().Add(s.opts.UpstreamTimeout))
		refusal, err := login(u, cred)
		if err != nil {
			u.conn.Close()
			s.log.Warn("inbound: upstream login failed", "protocol", protocol, "account", account, "upstream", addr, "error", err.Error())
			return nil, &signInFailure{kind: LoginUnavailable, msg: "Microsoft 365 (" + addr + ") did not answer as expected; try again later", closeClient: true}
		}
		if refusal == "" {
			u.conn.SetDeadline(time.Time{})
			return u, nil
		}
		u.conn.Close()
		if attempt == 1 {
			s.log.Info("inbound: Microsoft refused the token; trying once more with a fresh one", "protocol", protocol, "account", account, "reply", refusal, "token", cred.Fingerprint)
			s.opts.Tokens.Invalidate(account)
			continue
		}
		ex := s.opts.Tokens.AuthRefused(account, protocol, refusal)
		return nil, &signInFailure{kind: LoginRefused, msg: "Microsoft refused the relay's sign-in for this mailbox (" + ex.Title + "); the relay's admin must look at account " + account}
	}
}

// upstream is the server account's protocol logins go to.
func (s *Server) upstream(protocol, account string) string {
	if s.opts.UpstreamFor != nil {
		if addr := s.opts.UpstreamFor(account, protocol); addr != "" {
			return addr
		}
	}
	if protocol == IMAP {
		return s.opts.IMAPUpstream
	}
	return s.opts.POP3Upstream
}

// dial connects to addr with implicit TLS, verified against RootCAs. A
// token is never sent without TLS.
func (s *Server) dial(addr string) (*upstreamConn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	cfg := s.upTLS[host]
	if cfg == nil {
		// The certificate is checked against host.
		cfg = &tls.Config{ServerName: host, RootCAs: s.opts.RootCAs, MinVersion: tls.VersionTLS12, ClientSessionCache: s.tlsCache}
		s.upTLS[host] = cfg
	}
	s.mu.Unlock()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: s.opts.DialTimeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.DialTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &upstreamConn{conn: c, br: newLineReader(c)}, nil
}

// maxPreLogin is how many connections one address may have in the login
// phase at once, maxPreLoginAll how many all addresses together (many
// hosts, or one IPv6 /64, cannot take every file descriptor).
const (
	maxPreLogin    = 20
	maxPreLoginAll = 256
)

// loginDeadline sets c's deadline for the next command: LoginTimeout, but
// not past LoginPhaseMax from start (a client that keeps sending NOOP does
// not hold a connection for ever). It reports false once that is over.
func (s *Server) loginDeadline(c net.Conn, start time.Time) bool {
	end := start.Add(s.opts.LoginPhaseMax)
	if !time.Now().Before(end) {
		return false
	}
	next := time.Now().Add(s.opts.LoginTimeout)
	if next.After(end) {
		next = end
	}
	c.SetDeadline(next)
	return true
}

// serveConn runs one client's login phase and, once it is logged in,
// hands the session to the two goroutines that relay its bytes; end runs
// when the client is gone, either way. The goroutine that ran the login
// (bcrypt, the TLS handshake upstream: a deep stack) ends at the hand-off,
// so an idle session holds only two shallow ones.
func (s *Server) serveConn(c net.Conn, protocol string, end func()) {
	ip := remoteIP(c)
	s.mu.Lock()
	busy := s.preLogin[ip] >= maxPreLogin || s.preLoginAll >= maxPreLoginAll
	if !busy {
		s.preLogin[ip]++
		s.preLoginAll++
	}
	s.mu.Unlock()
	if busy {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if protocol == IMAP {
			io.WriteString(c, "* BYE [UNAVAILABLE] too many connections are still logging in; try again shortly\r\n")
		} else {
			io.WriteString(c, "-ERR [SYS/TEMP] too many connections are still logging in; try again shortly\r\n")
		}
		end()
		return
	}
	var r *relay
	if protocol == IMAP {
		r = s.imapSession(c)
	} else {
		r = s.pop3Session(c)
	}
	s.mu.Lock()
	if s.preLogin[ip]--; s.preLogin[ip] <= 0 {
		delete(s.preLogin, ip)
	}
	s.preLoginAll--
	s.mu.Unlock()
	if r == nil {
		end()
		return
	}
	s.startRelay(r, end)
}

// relay is a logged-in session: the client and Microsoft's connection
// with what each side sent beyond the login, and its account slot.
type relay struct {
	protocol, user, account string
	client, up              net.Conn
	fromClient, fromUp      io.Reader
}

// handOff ends a login that succeeded: the session keeps the account's
// slot until it ends, and no longer keeps the login's line buffers.
func (s *Server) handOff(protocol, user, account string, client net.Conn, cr *lineReader, u *upstreamConn) *relay {
	return &relay{protocol: protocol, user: user, account: account,
		client: client, fromClient: cr.rest(client), up: u.conn, fromUp: u.br.rest(u.conn)}
}

// startRelay relays r until both sides are done, then reports it, gives
// back its account slot and calls end. It does not wait.
func (s *Server) startRelay(r *relay, end func()) {
	start := time.Now()
	s.opened(r.account, r.protocol, 1)
	// Close cuts the upstream side too: after the client's EOF only that
	// side may still be open.
	s.mu.Lock()
	closed := s.closed
	s.conns[r.up] = struct{}{}
	s.mu.Unlock()
	if closed {
		r.up.Close()
	}
	pipe(r.client, r.fromClient, r.up, r.fromUp, s.opts.CloseGrace, func(in, out int64) {
		s.mu.Lock()
		delete(s.conns, r.up)
		s.mu.Unlock()
		s.opened(r.account, r.protocol, -1) // before the report: it sees the session gone
		s.release(r.account)
		sess := Session{Protocol: r.protocol, Client: r.client.RemoteAddr().String(), User: r.user, Account: r.account,
			Duration: time.Since(start), BytesIn: in, BytesOut: out}
		s.log.Info("inbound: session ended", "protocol", r.protocol, "client", sess.Client, "user", r.user, "account", r.account,
			"duration", sess.Duration.Round(time.Millisecond).String(), "bytes_in", in, "bytes_out", out)
		if s.opts.Events.Session != nil {
			s.opts.Events.Session(sess)
		}
		end()
	})
}

func (s *Server) opened(account, protocol string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[account] == nil {
		s.open[account] = map[string]int{}
	}
	if s.open[account][protocol] += n; s.open[account][protocol] <= 0 {
		delete(s.open[account], protocol)
		if len(s.open[account]) == 0 {
			delete(s.open, account)
		}
	}
}

// Sessions returns the relayed sessions open now: account → protocol →
// count (accounts and protocols with none are left out).
func (s *Server) Sessions() map[string]map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]int, len(s.open))
	for a, ps := range s.open {
		out[a] = maps.Clone(ps)
	}
	return out
}

// LoginResults lists every login result, for metrics that show each at 0.
func LoginResults() []string {
	return []string{LoginOK, LoginBadPassword, LoginLockedOut, LoginNotPrivate, LoginBusy, LoginUnavailable, LoginRefused}
}

// freeFailures per address before the first lock of its logins
// (internal/lockout), as many as SMTP AUTH allows.
const freeFailures = 5

// remoteIP is c's client address (the zero Addr if it has none).
func remoteIP(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
