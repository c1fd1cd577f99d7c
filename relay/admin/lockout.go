package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// lockout makes guessing the admin token slow. An address gets a few
// wrong tokens free; each further one locks it out for a growing period
// (1 s, 2 s, 4 s, … up to 15 min), during which every attempt from it —
// right or wrong — is refused without being checked. A right token outside
// a lock forgets the address. Bearer tokens and the login form share it.
type lockout struct {
	free      int           // wrong tokens before the first lock
	base, max time.Duration // first lock, longest lock
	now       func() time.Time
	log       *slog.Logger

	mu sync.Mutex
	by *expirable.LRU[string, *guesser]
}

type guesser struct {
	fails int
	until time.Time
}

func newLockout(log *slog.Logger) *lockout {
	return &lockout{free: 5, base: time.Second, max: 15 * time.Minute, now: time.Now, log: log,
		by: expirable.NewLRU[string, *guesser](8192, nil, 24*time.Hour)}
}

// locked reports whether ip is locked out now, and for how long still.
func (l *lockout) locked(ip string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Peek(ip)
	if !ok {
		return 0, false
	}
	left := g.until.Sub(l.now())
	return left, left > 0
}

// fail records a wrong token from ip; past the free ones it starts a lock
// (logged once, with the address).
func (l *lockout) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Get(ip)
	if !ok {
		g = &guesser{}
		l.by.Add(ip, g)
	}
	g.fails++
	if g.fails <= l.free {
		return
	}
	d := l.base << min(g.fails-l.free-1, 20)
	d = min(d, l.max)
	g.until = l.now().Add(d)
	l.log.Warn("admin: address locked out after wrong admin tokens; every attempt from it is refused until the lock ends",
		"client", ip, "wrong_tokens", g.fails, "locked_for", d.String())
}

// success forgets ip's failures.
func (l *lockout) success(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by.Remove(ip)
}

// equalSecret compares in constant time, also in the length: both sides
// are hashed first (subtle.ConstantTimeCompare returns at once on a length
// mismatch, which would tell the token's length).
func equalSecret(given, want string) bool {
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// LimitListener lets at most n admin connections be open at once; more
// wait in the kernel's backlog until one closes.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n)}
}

type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotConn{Conn: c, free: func() { <-l.slots }}, nil
}

type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}
