package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// Upstream sessions: dialling (TCP, TLS, EHLO) with a deadline on every
// read and write, signing in with XOAUTH2, the per-account pool, and at
// most delivery.connections sessions open at once.

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
	// The credential first: an account that cannot sign in (no token,
	// Microsoft refusing it) opens no connection at all.
	cred, aerr := d.credential(ctx, u)
	if aerr != nil {
		return nil, aerr
	}
	if err := d.acquire(ctx, u); err != nil {
		return nil, &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.4.5", Text: "relay shutting down"}}
	}
	c, raw, aerr := d.open(ctx, d.addr(u))
	if aerr != nil {
		<-u.sessions
		return nil, aerr
	}
	if d.events.ConnOpened != nil {
		d.events.ConnOpened(u.Name)
	}
	uc, aerr := d.login(u, c, cred)
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

// addr is the submission server of u: its own, else upstream.addr.
func (d *Upstream) addr(u *upAccount) string {
	if u.Addr != "" {
		return u.Addr
	}
	return d.cfg.Addr
}

// open connects to the upstream addr: TCP, TLS (STARTTLS or implicit), EHLO.
// It refuses a connection without TLS unless InsecureAllowPlaintext. It
// returns the TCP connection under the client too, to cut it if need be.
func (d *Upstream) open(ctx context.Context, addr string) (*smtp.Client, net.Conn, *attemptError) {
	c, raw, aerr := d.openConn(ctx, addr)
	if aerr != nil {
		// Nothing of the session worked: the upstream is unreachable
		// (an outage), unless it answered at EHLO with something other
		// than 421.
		aerr.unreachable = aerr.reply.Code == 421 || aerr.reply.Code == 451 || aerr.reply.Code == 454
	}
	return c, raw, aerr
}

func (d *Upstream) openConn(ctx context.Context, addr string) (*smtp.Client, net.Conn, *attemptError) {
	connErr := func(what string, err error) *attemptError {
		return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.4.1", Text: fmt.Sprintf("%s %s: %v", what, addr, err)}}
	}
	dialer := &net.Dialer{Timeout: d.cfg.DialTimeout}
	host, _, _ := net.SplitHostPort(addr)
	tlsCfg := &tls.Config{ServerName: host, RootCAs: d.cfg.RootCAs, MinVersion: tls.VersionTLS12}
	raw, err := dialer.DialContext(ctx, "tcp", addr)
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
			return nil, nil, d.tlsErr(addr, err)
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
			return nil, nil, d.tlsErr(addr, err)
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
			return nil, nil, d.tlsErr(addr, err)
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

func (d *Upstream) tlsErr(addr string, err error) *attemptError {
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 454, Enhanced: "4.7.5",
			Text: fmt.Sprintf("certificate of %s not trusted: %v (upstream.ca_file adds a CA)", addr, ce.Err)}}
	}
	return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 454, Enhanced: "4.7.0",
		Text: fmt.Sprintf("TLS with %s failed (%v); refusing to send an OAuth token without TLS", addr, err)}}
}

// credential gets the account's sign-in (tokens.Auth): an account the
// tokens package refuses (needs attention) pauses; no token yet defers.
func (d *Upstream) credential(ctx context.Context, u *upAccount) (tokens.Credential, *attemptError) {
	cred, err := d.tokens.Auth(ctx, u.Name)
	if err != nil {
		var ae *tokens.AccountError
		if errors.As(err, &ae) {
			return cred, &attemptError{pause: ae.Explanation.String()}
		}
		return cred, &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.7.0", Text: "no access token yet: " + err.Error()}}
	}
	return cred, nil
}

// login signs in to an open upstream connection with the account's token
// (XOAUTH2); the connection is closed on failure.
func (d *Upstream) login(u *upAccount, c *smtp.Client, cred tokens.Credential) (*upConn, *attemptError) {
	if err := c.Auth(cred.SASL); err != nil {
		c.Close()
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 {
			enh := enhanced(se)
			d.reply(u.Name, se.Code, enh)
			d.log.Warn("delivery: "+u.service()+" refused the login", "account", u.Name, "reply", fmt.Sprintf("%d %s %s", se.Code, enh, se.Message), "token", cred.Fingerprint)
			return nil, &attemptError{auth535: true, reply: queue.Reply{Code: se.Code, Enhanced: enh, Text: se.Message}}
		}
		return nil, d.replyErr("AUTH", err)
	}
	return &upConn{c: c, tokenExpiry: cred.Expiry}, nil
}
