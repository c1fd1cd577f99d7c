package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/credfile"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/internal/lockout"
	"github.com/oauthrelay/oauthrelay/queue"
	"golang.org/x/crypto/bcrypt"
)

// Enqueuer is where accepted mail goes (the queue).
type Enqueuer interface {
	Enqueue(ctx context.Context, env queue.Envelope, body io.Reader) (string, error)
}

// ListenerConfig configures the SMTP listener. Timings are fields.
type ListenerConfig struct {
	Hostname        string
	AllowedNetworks []netip.Prefix
	MaxMessageBytes int64
	// MaxRecipients per message; 0 means 100 (RFC 5321 4.5.3.1.8).
	MaxRecipients int
	MaxSessions   int
	// ReadTimeout bounds each read: a command awaited, or the next octets
	// of a message (RFC 5321 4.5.3.2 asks for minutes).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// TLS enables STARTTLS when set.
	TLS *tls.Config
	// Users maps user names to bcrypt hashes; empty disables AUTH.
	Users map[string][]byte
	// AuthRequired makes MAIL without AUTH fail with 530 5.7.0.
	AuthRequired bool
	// AuthLockoutBase and AuthLockoutMax are the first and the longest
	// lock of an address after failed AUTHs (internal/lockout); 0: 1 s, 15 min.
	AuthLockoutBase, AuthLockoutMax time.Duration

	// MaxSessionsPerClient caps the sessions one client address may have
	// open at once, so one host cannot take every slot (421 4.7.0); 0: no
	// cap of its own.
	MaxSessionsPerClient int
	// MaxJunkCommands is how many commands a session may send without
	// completing a message — NOOP, RSET, VRFY, HELP, HELO/EHLO and every
	// refused command (a refused RCPT only past a message's first
	// MaxRecipients) — before it is closed (421 4.7.0); a message accepted
	// starts the count afresh. 0: no limit.
	MaxJunkCommands int
	// MaxSessionTime ends a session this old (421 4.7.0) when it next
	// awaits a command; a message being received is finished first. 0: no
	// limit.
	MaxSessionTime time.Duration
	// MaxDataTime bounds one DATA as a whole, however steadily the client
	// sends (ReadTimeout bounds each read): past it 421 4.4.2 and nothing
	// is queued. 0: no bound.
	MaxDataTime time.Duration
	// NullSenderAccount takes mail from the null sender <> (bounces, DSNs)
	// whose From: header no route matches; such mail is routed once its
	// header is read. Empty: <> routes only through a "*" pattern.
	NullSenderAccount string
}

// ListenerEvents receives what the listener does, for metrics. Any field may be nil.
type ListenerEvents struct {
	Session func()
	// Rejected gets one of RejectionReasons.
	Rejected func(reason string)
	Accepted func(account string, size int64)
}

// RejectionReasons lists the reasons ListenerEvents.Rejected is given:
// a connection refused (network, sessions, client_sessions), a session
// ended (junk_commands, session_time, data_time), a command or message
// refused (the rest). Each failed AUTH is one "auth".
func RejectionReasons() []string {
	return []string{"network", "sessions", "client_sessions", "junk_commands", "session_time", "data_time",
		"address", "recipients", "unrouted_sender", "size", "line_length", "auth", "auth_required", "disk"}
}

// Listener is the SMTP server applications send to. smtpConn
// (smtpconn.go) speaks the protocol; the session below decides what is
// accepted.
type Listener struct {
	cfg     ListenerConfig
	q       Enqueuer
	router  *Router
	log     *slog.Logger
	events  ListenerEvents
	active  atomic.Int64
	serving atomic.Bool
	// lockout slows AUTH guessing per address; it outlives connections,
	// so reconnecting does not start afresh (the per-connection limit,
	// maxAuthFailures, is smtpConn's).
	lockout *lockout.Lockout[netip.Addr]
	// dummyHash is checked for an unknown user, at the cost of the real
	// users' hashes, so a refusal takes as long whether the user exists.
	dummyHash []byte

	mu      sync.Mutex
	closing bool
	lns     []net.Listener
	conns   map[*smtpConn]struct{}
	clients map[netip.Addr]int       // open sessions by client address
	refused map[netip.Addr]time.Time // when a stranger's refusal was last logged
	wg      sync.WaitGroup
}

// defaultMaxRecipients: RFC 5321 4.5.3.1.8 asks that at least 100 be taken.
const defaultMaxRecipients = 100

// NewListener builds a listener that queues into q, routing by router.
func NewListener(cfg ListenerConfig, q Enqueuer, router *Router, log *slog.Logger, events ListenerEvents) *Listener {
	cost := bcrypt.MinCost
	for _, h := range cfg.Users {
		if c, err := bcrypt.Cost(h); err == nil && c > cost {
			cost = c
		}
	}
	var dummy []byte
	if len(cfg.Users) > 0 {
		dummy, _ = bcrypt.GenerateFromPassword([]byte("oauthrelay: no such user"), cost)
	}
	return &Listener{cfg: cfg, q: q, router: router, log: log, events: events,
		lockout:   lockout.New[netip.Addr](maxAuthFailures, cfg.AuthLockoutBase, cfg.AuthLockoutMax),
		dummyHash: dummy,
		conns:     map[*smtpConn]struct{}{}, clients: map[netip.Addr]int{}, refused: map[netip.Addr]time.Time{}}
}

// firstRefusal reports whether a refusal of ip should be logged: once a
// minute per address, so a stranger cannot flood the log.
func (l *Listener) firstRefusal(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.refused[ip]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if len(l.refused) > 4096 {
		for a, t := range l.refused {
			if now.Sub(t) >= time.Minute {
				delete(l.refused, a)
			}
		}
	}
	l.refused[ip] = now
	return true
}

func (l *Listener) maxRecipients() int {
	if l.cfg.MaxRecipients > 0 {
		return l.cfg.MaxRecipients
	}
	return defaultMaxRecipients
}

// Serve accepts connections on ln until Shutdown.
func (l *Listener) Serve(ln net.Listener) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil
	}
	l.lns = append(l.lns, ln)
	l.mu.Unlock()
	l.serving.Store(true)
	defer l.serving.Store(false)
	g := &guardedListener{Listener: ln, l: l}
	var backoff time.Duration
	for {
		nc, err := g.Accept()
		if err != nil {
			if l.isClosing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("smtp: accept failed; retrying", "error", err.Error(), "in", backoff.String())
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newSMTPConn(l, nc)
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			nc.Close()
			continue
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			c.serve()
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

func (l *Listener) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// Accepting reports whether new SMTP sessions are taken now: the accept
// loop runs and the session cap is not reached. It opens no connection, so
// health checks do not show up as SMTP sessions.
func (l *Listener) Accepting() error {
	if !l.serving.Load() {
		return errors.New("not serving")
	}
	if n := l.active.Load(); l.cfg.MaxSessions > 0 && n >= int64(l.cfg.MaxSessions) {
		return fmt.Errorf("full: %d sessions (listen.max_sessions)", n)
	}
	return nil
}

// Shutdown stops accepting; sessions waiting for a command are told
// 421 4.3.2 at once, and a message being received is finished first. When
// ctx is done before every session has ended, the rest are cut.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	l.closing = true
	lns := l.lns
	conns := make([]*smtpConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		c.interrupt()
	}
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for c := range l.conns {
			c.conn().Close()
		}
		l.mu.Unlock()
		return ctx.Err()
	}
}

// guardedListener refuses, before any SMTP, clients outside
// allowed_networks (554 5.7.1) and sessions past the cap (421 4.7.0).
type guardedListener struct {
	net.Listener
	l *Listener
}

func (g *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l := g.l
		ip := remoteIP(c)
		if !l.allowed(ip) {
			l.reject(c, "network", "554 5.7.1 "+ip.String()+" is not allowed to use this relay (listen.allowed_networks)")
			if l.firstRefusal(ip) {
				l.log.Warn("smtp: connection refused: not in allowed_networks (logged once a minute per address; every refusal is counted in oauthrelay_smtp_rejections_total{reason=\"network\"})", "client", ip.String())
			}
			continue
		}
		if !l.claimClientSlot(ip) {
			l.reject(c, "client_sessions", "421 4.7.0 Too many connections from your address, try again later")
			l.log.Debug("smtp: connection refused: the client has listen.max_sessions_per_client sessions open", "client", ip.String())
			continue
		}
		if n := l.active.Add(1); l.cfg.MaxSessions > 0 && n > int64(l.cfg.MaxSessions) {
			l.active.Add(-1)
			l.releaseClientSlot(ip)
			l.reject(c, "sessions", "421 4.7.0 too many connections, try again later")
			continue
		}
		if l.events.Session != nil {
			l.events.Session()
		}
		return &countedConn{Conn: c, done: func() { l.active.Add(-1); l.releaseClientSlot(ip) }}, nil
	}
}

// claimClientSlot counts a session from ip, unless ip already has
// MaxSessionsPerClient open.
func (l *Listener) claimClientSlot(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.cfg.MaxSessionsPerClient; n > 0 && l.clients[ip] >= n {
		return false
	}
	l.clients[ip]++
	return true
}

func (l *Listener) releaseClientSlot(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients[ip]--; l.clients[ip] <= 0 {
		delete(l.clients, ip)
	}
}

func (l *Listener) reject(c net.Conn, reason, line string) {
	if l.events.Rejected != nil {
		l.events.Rejected(reason)
	}
	go func() {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%s\r\n", line)
		c.Close()
	}()
}

type countedConn struct {
	net.Conn
	done   func()
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.done()
	}
	return c.Conn.Close()
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *Listener) allowed(ip netip.Addr) bool {
	for _, p := range l.cfg.AllowedNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (l *Listener) newSession(c *smtpConn) *session {
	return &session{l: l, c: c, remote: c.remote}
}

// session is what the listener allows: AUTH, routing the sender to an
// account, limits, and queueing the message. smtpConn calls it once a
// command's syntax is checked; the addresses it gets are parsed.
type session struct {
	l        *Listener
	c        *smtpConn
	remote   netip.Addr
	authUser string
	// triedUser is the user of the AUTH being checked (the lockout counts
	// failures per user: a success forgets only its own user's).
	triedUser string

	from     Address
	account  string
	smtputf8 bool
	eightBit bool
	to       []string // as Address.String writes them
}

var (
	errAuthRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errEncryptionReq = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism: use STARTTLS"}
	errAuthFailed    = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	// errAuthLocked: RFC 4954 6 gives 454 4.7.0 for a temporary failure.
	errAuthLocked  = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts from your address; try again later"}
	errDiskTrouble = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage; try again later"}
	errTooBig      = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds fixed maximum message size"}
)

func (s *session) reject(reason string, err *smtp.SMTPError) error {
	if s.l.events.Rejected != nil {
		s.l.events.Rejected(reason)
	}
	return err
}

// AuthMechanisms offers AUTH only where a password cannot be read on the
// way: over TLS, or from loopback. Elsewhere it is not even advertised, so
// no client sends a password in clear text just to be refused.
func (s *session) AuthMechanisms() []string {
	if len(s.l.cfg.Users) == 0 {
		return nil
	}
	if !s.c.isTLS && !s.remote.IsLoopback() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if len(s.l.cfg.Users) == 0 {
		return nil, smtp.ErrAuthUnsupported
	}
	if !s.c.isTLS && !s.remote.IsLoopback() {
		return nil, errEncryptionReq
	}
	if _, locked := s.l.lockout.Locked(s.remote); locked {
		return nil, errAuthLocked
	}
	// check runs in the session's goroutine, never the accept loop: bcrypt
	// takes its time on purpose.
	check := func(user, pass string) error {
		s.triedUser = user
		if _, locked := s.l.lockout.Locked(s.remote); locked { // a lock begun during the exchange
			return errAuthLocked
		}
		hash, ok := s.l.cfg.Users[user]
		if !ok {
			hash = s.l.dummyHash // same work, same time, same log line for unknown users
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !ok {
			logged := user
			if !ok {
				logged = "(unknown user)" // perhaps a password typed into the user field
			}
			s.l.log.Warn("smtp: authentication failed", "client", s.remote.String(), "user", logged)
			return errAuthFailed
		}
		s.authUser = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return errAuthFailed
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// AuthFailed counts a failed AUTH (wrong or malformed credentials, or one
// refused during a lockout) and returns the reply. Each failure outside a
// lock brings the address nearer its next lock.
func (s *session) AuthFailed(err error) error {
	if err != errAuthLocked {
		if d, n := s.l.lockout.Fail(s.remote, s.triedUser); d > 0 {
			s.l.log.Warn("smtp: address locked out after failed AUTH; every AUTH from it is refused until the lock ends",
				"client", s.remote.String(), "failed_auths", n, "locked_for", d.String())
		}
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		se = errAuthFailed
	}
	return s.reject("auth", se)
}

// AuthSucceeded forgets the address's failed AUTHs for the same user.
func (s *session) AuthSucceeded() {
	s.l.lockout.Success(s.remote, s.authUser)
}

// loginServer is the server side of AUTH LOGIN (go-sasl has only a client).
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if len(resp) > 0 { // initial response carries the user name
			l.user = string(resp)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

func (s *session) Mail(from Address, p mailParams) error {
	if s.l.cfg.AuthRequired && s.authUser == "" {
		return s.reject("auth_required", errAuthRequired)
	}
	if p.size > 0 && s.l.cfg.MaxMessageBytes > 0 && p.size > s.l.cfg.MaxMessageBytes {
		return s.reject("size", errTooBig)
	}
	account := "" // the null sender's is chosen by its header (nullsender.go)
	if !from.IsNull() || s.l.cfg.NullSenderAccount == "" {
		var ok bool
		if account, ok = s.l.router.Route(from); !ok {
			s.l.log.Warn("smtp: sender refused: no account routes it", "client", s.remote.String(), "sender", from.String())
			return s.reject("unrouted_sender", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
				Message: fmt.Sprintf("sender <%s> is not permitted: no account routes it", from)})
		}
	}
	s.from, s.account, s.smtputf8, s.eightBit = from, account, p.smtputf8, p.eightBit
	return nil
}

func (s *session) Rcpt(to Address) error {
	s.to = append(s.to, to.String())
	return nil
}

// Data queues the message r reads. It returns the reply: 250 with the
// queue ID, or why the message was not taken.
func (s *session) Data(r *dataReader) error {
	var body io.Reader = r
	if s.account == "" {
		head, account, by := s.routeNullSender(r)
		s.account, body = account, io.MultiReader(bytes.NewReader(head), r)
		s.l.log.Debug("smtp: null sender routed", "client", s.remote.String(), "account", account, "by", by)
	}
	env := queue.Envelope{
		From: s.from.String(), To: s.to, Account: s.account,
		SMTPUTF8: s.smtputf8, EightBit: s.eightBit,
		ClientAddr: s.remote.String(),
	}
	id, err := s.l.q.Enqueue(context.Background(), env, io.MultiReader(strings.NewReader(s.received()), body))
	if err != nil {
		switch {
		case r.limitErr == errTooBig:
			return s.reject("size", errTooBig)
		case r.limitErr != nil:
			s.l.log.Warn("smtp: message refused: a line is too long", "client", s.remote.String(), "sender", s.from.String())
			return s.reject("line_length", r.limitErr)
		case r.readErr != nil:
			s.l.log.Warn("smtp: message not received", "client", s.remote.String(), "error", r.readErr.Error())
			return r.readErr
		case errors.Is(err, queue.ErrDiskTrouble):
			s.l.log.Error("smtp: message refused: spool write failed", "client", s.remote.String(), "error", err.Error())
			return s.reject("disk", errDiskTrouble)
		default:
			s.l.log.Warn("smtp: message not queued", "client", s.remote.String(), "error", err.Error())
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Message not queued; try again later"}
		}
	}
	s.l.log.Info("smtp: message accepted", "id", id, "client", s.remote.String(), "sender", s.from.String(),
		"recipients", len(s.to), "size", r.size, "account", s.account)
	if s.l.events.Accepted != nil {
		s.l.events.Accepted(s.account, r.size)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + id}
}

// received is our trace header (RFC 5321 4.4).
func (s *session) received() string {
	with := "ESMTP"
	if s.c.isTLS {
		with += "S"
	}
	if s.authUser != "" {
		with += "A"
	}
	if s.smtputf8 {
		with = "UTF8SMTP" + strings.TrimPrefix(with, "ESMTP")
	}
	h := fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (oauthrelay) with %s", heloForHeader(s.c.helo), s.remote, s.l.cfg.Hostname, with)
	if len(s.to) == 1 {
		h += fmt.Sprintf("\r\n\tfor <%s>", s.to[0])
	}
	return h + "; " + time.Now().Format(time.RFC1123Z) + "\r\n"
}

// heloForHeader is the client's HELO/EHLO name as it may appear in a
// header or reply: printable ASCII without parentheses, at most 255
// octets; "unknown" if nothing is left.
func heloForHeader(helo string) string {
	h := strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 127 || r == '(' || r == ')' || r == '\\' {
			return -1
		}
		return r
	}, helo)
	if len(h) > 255 {
		h = h[:255]
	}
	if h == "" {
		return "unknown"
	}
	return h
}

// Reset ends the mail transaction.
func (s *session) Reset() {
	s.from, s.account, s.to, s.smtputf8, s.eightBit = Address{}, "", nil, false, false
}

// LoadUsers reads a users file of "user:bcrypt-hash" lines (# comments).
func LoadUsers(path string) (map[string][]byte, error) {
	raw, err := credfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("listen.auth.users_file: %w", err)
	}
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("listen.auth.users_file %s line %d: want user:bcrypt-hash (make one with: htpasswd -nbB user password)", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("listen.auth.users_file %s line %d: the hash for %s is not bcrypt (make one with: htpasswd -nbB user password)", path, n, user)
		}
		users[user] = []byte(hash)
	}
	return users, sc.Err()
}
