package relay

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// authLockout makes guessing SMTP AUTH passwords slow, per client address
// (the admin token's lockout, relay/admin/lockout.go, is the model). An
// address gets a few failed AUTHs free; each further one locks it out for
// a growing period (1 s, 2 s, 4 s, … up to 15 min), during which every
// AUTH from it — right password or wrong — is refused without being
// checked. A success outside a lock forgets the address. The limit per
// connection (maxAuthFailures) is smtpConn's; this one outlives
// connections, so reconnecting does not start afresh.
type authLockout struct {
	free      int           // failures before the first lock
	base, max time.Duration // first lock, longest lock
	now       func() time.Time
	log       *slog.Logger

	mu sync.Mutex
	by *expirable.LRU[netip.Addr, *authGuesser]
}

type authGuesser struct {
	fails int
	until time.Time
}

const (
	// authFreeFailures per address before the first lock, as many as one
	// connection may make.
	authFreeFailures   = maxAuthFailures
	defaultLockoutBase = time.Second
	defaultLockoutMax  = 15 * time.Minute
)

func newAuthLockout(base, longest time.Duration, log *slog.Logger) *authLockout {
	if base <= 0 {
		base = defaultLockoutBase
	}
	if longest <= 0 {
		longest = defaultLockoutMax
	}
	return &authLockout{free: authFreeFailures, base: base, max: max(base, longest), now: time.Now, log: log,
		by: expirable.NewLRU[netip.Addr, *authGuesser](8192, nil, 24*time.Hour)}
}

// locked reports whether ip is locked out now.
func (l *authLockout) locked(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Peek(ip)
	return ok && l.now().Before(g.until)
}

// fail records a failed AUTH from ip; past the free ones it starts a lock
// (logged once, with the address).
func (l *authLockout) fail(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Get(ip)
	if !ok {
		g = &authGuesser{}
		l.by.Add(ip, g)
	}
	g.fails++
	if g.fails <= l.free {
		return
	}
	d := min(l.base<<min(g.fails-l.free-1, 20), l.max)
	g.until = l.now().Add(d)
	l.log.Warn("smtp: address locked out after failed AUTH; every AUTH from it is refused until the lock ends",
		"client", ip.String(), "failed_auths", g.fails, "locked_for", d.String())
}

// success forgets ip's failures.
func (l *authLockout) success(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by.Remove(ip)
}
