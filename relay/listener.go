package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
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
	MaxRecipients   int
	MaxSessions     int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	// TLS enables STARTTLS when set.
	TLS *tls.Config
	// Users maps user names to bcrypt hashes; empty disables AUTH.
	Users map[string][]byte
	// AuthRequired makes MAIL without AUTH fail with 530 5.7.0.
	AuthRequired bool
}

// ListenerEvents receives what the listener does, for metrics. Any field may be nil.
type ListenerEvents struct {
	Session  func()
	Rejected func(reason string)
	Accepted func(account string, size int64)
}

// Listener is the SMTP server applications send to.
type Listener struct {
	cfg     ListenerConfig
	q       Enqueuer
	router  *Router
	log     *slog.Logger
	events  ListenerEvents
	srv     *smtp.Server
	active  atomic.Int64
	serving atomic.Bool
}

// NewListener builds a listener that queues into q, routing by router.
func NewListener(cfg ListenerConfig, q Enqueuer, router *Router, log *slog.Logger, events ListenerEvents) *Listener {
	l := &Listener{cfg: cfg, q: q, router: router, log: log, events: events}
	s := smtp.NewServer(smtp.BackendFunc(l.newSession))
	s.Domain = cfg.Hostname
	s.MaxMessageBytes = cfg.MaxMessageBytes
	s.MaxRecipients = cfg.MaxRecipients
	s.MaxLineLength = 128 << 10 // long HTML lines happen; RFC 5321's 1000 is often exceeded
	s.ReadTimeout = cfg.ReadTimeout
	s.WriteTimeout = cfg.WriteTimeout
	s.TLSConfig = cfg.TLS
	s.EnableSMTPUTF8 = true
	s.AllowInsecureAuth = true // checked per session: TLS or loopback (see Auth)
	s.ErrorLog = slogPrinter{log}
	l.srv = s
	return l
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Debug("smtp: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (p slogPrinter) Println(v ...any) { p.log.Debug("smtp: " + strings.TrimSpace(fmt.Sprintln(v...))) }

// Serve accepts connections on ln until Shutdown.
func (l *Listener) Serve(ln net.Listener) error {
	l.serving.Store(true)
	defer l.serving.Store(false)
	err := l.srv.Serve(&guardedListener{Listener: ln, l: l})
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
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

// Shutdown stops accepting, lets sessions in progress finish until ctx is
// done, then closes them.
func (l *Listener) Shutdown(ctx context.Context) error {
	err := l.srv.Shutdown(ctx)
	if err != nil {
		l.srv.Close()
	}
	return err
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
			l.log.Warn("smtp: connection refused: not in allowed_networks", "client", ip.String())
			continue
		}
		if n := l.active.Add(1); l.cfg.MaxSessions > 0 && n > int64(l.cfg.MaxSessions) {
			l.active.Add(-1)
			l.reject(c, "sessions", "421 4.7.0 too many connections, try again later")
			continue
		}
		if l.events.Session != nil {
			l.events.Session()
		}
		return &countedConn{Conn: c, done: func() { l.active.Add(-1) }}, nil
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

func (l *Listener) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{l: l, conn: c, remote: remoteIP(c.Conn())}, nil
}

type session struct {
	l        *Listener
	conn     *smtp.Conn
	remote   netip.Addr
	authUser string

	from    string
	account string
	opts    smtp.MailOptions
	to      []string
}

var (
	errAuthRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errEncryptionReq = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism: use STARTTLS"}
	errAuthFailed    = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errDiskTrouble   = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage; try again later"}
	errTooBig        = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds fixed maximum message size"}
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
	if _, isTLS := s.conn.TLSConnectionState(); !isTLS && !s.remote.IsLoopback() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if len(s.l.cfg.Users) == 0 {
		return nil, smtp.ErrAuthUnsupported
	}
	if _, isTLS := s.conn.TLSConnectionState(); !isTLS && !s.remote.IsLoopback() {
		return nil, errEncryptionReq
	}
	check := func(user, pass string) error {
		hash, ok := s.l.cfg.Users[user]
		if !ok {
			bcrypt.CompareHashAndPassword(dummyHash, []byte(pass)) // same time for unknown users
			return s.reject("auth", errAuthFailed)
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
			s.l.log.Warn("smtp: authentication failed", "client", s.remote.String(), "user", user)
			return s.reject("auth", errAuthFailed)
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

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("oauthrelay"), bcrypt.MinCost)

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

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.l.cfg.AuthRequired && s.authUser == "" {
		return s.reject("auth_required", errAuthRequired)
	}
	if opts != nil && opts.Size > 0 && s.l.cfg.MaxMessageBytes > 0 && opts.Size > s.l.cfg.MaxMessageBytes {
		return s.reject("size", errTooBig)
	}
	account, ok := s.l.router.Route(from)
	if !ok {
		shown := from
		if shown == "" {
			shown = "<>"
		}
		s.l.log.Warn("smtp: sender refused: no account routes it", "client", s.remote.String(), "sender", from)
		return s.reject("unrouted_sender", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("sender <%s> is not permitted: no account routes it", strings.Trim(shown, "<>"))})
	}
	s.from, s.account = from, account
	if opts != nil {
		s.opts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if to == "" {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "empty recipient address"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	env := queue.Envelope{
		From: s.from, To: s.to, Account: s.account,
		SMTPUTF8: s.opts.UTF8, EightBit: s.opts.Body == smtp.Body8BitMIME,
		ClientAddr: s.remote.String(),
	}
	counting := &countingReader{r: r}
	id, err := s.l.q.Enqueue(context.Background(), env, io.MultiReader(strings.NewReader(s.received()), counting))
	if err != nil {
		var se *smtp.SMTPError
		switch {
		case errors.As(err, &se): // e.g. 552 from go-smtp's size limit
			if se.Code == 552 {
				return s.reject("size", errTooBig)
			}
			return se
		case errors.Is(err, queue.ErrDiskTrouble):
			s.l.log.Error("smtp: message refused: spool write failed", "client", s.remote.String(), "error", err.Error())
			return s.reject("disk", errDiskTrouble)
		default:
			s.l.log.Warn("smtp: message not received", "client", s.remote.String(), "error", err.Error())
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "message not received completely; try again"}
		}
	}
	s.l.log.Info("smtp: message accepted", "id", id, "client", s.remote.String(), "sender", s.from,
		"recipients", len(s.to), "size", counting.n, "account", s.account)
	if s.l.events.Accepted != nil {
		s.l.events.Accepted(s.account, counting.n)
	}
	// go-smtp writes an *SMTPError's code as it is: our 250 carries the ID.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + id}
}

// received is our trace header (RFC 5321 4.4).
func (s *session) received() string {
	with := "ESMTP"
	if _, isTLS := s.conn.TLSConnectionState(); isTLS {
		with += "S"
	}
	if s.authUser != "" {
		with += "A"
	}
	if s.opts.UTF8 {
		with = "UTF8SMTP" + strings.TrimPrefix(with, "ESMTP")
	}
	helo := s.conn.Hostname()
	if helo == "" {
		helo = "unknown"
	}
	h := fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (oauthrelay) with %s", sanitizeHeader(helo), s.remote, s.l.cfg.Hostname, with)
	if len(s.to) == 1 {
		h += fmt.Sprintf("\r\n\tfor <%s>", sanitizeHeader(s.to[0]))
	}
	return h + "; " + time.Now().Format(time.RFC1123Z) + "\r\n"
}

func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == '(' || r == ')' {
			return -1
		}
		return r
	}, s)
}

func (s *session) Reset() {
	s.from, s.account, s.to, s.opts = "", "", nil, smtp.MailOptions{}
}

func (s *session) Logout() error { return nil }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// LoadUsers reads a users file of "user:bcrypt-hash" lines (# comments).
func LoadUsers(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("listen.auth.users_file: %w", err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
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
