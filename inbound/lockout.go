package inbound

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// lockout makes guessing local passwords slow, per client address, as the
// SMTP listener's AUTH lockout does (relay/authlockout.go; not imported:
// inbound and relay are siblings). An address gets a few failed logins
// free; each further one locks it out for a growing period (1 s, 2 s, 4 s,
// … up to 15 min), during which every login from it — right password or
// wrong — is refused without being checked. A success outside a lock
// forgets the address. It outlives connections, so reconnecting does not
// start afresh.
type lockout struct {
	free      int
	base, max time.Duration
	now       func() time.Time
	log       *slog.Logger

	mu sync.Mutex
	by *expirable.LRU[netip.Addr, *guesser]
}

type guesser struct {
	fails int
	until time.Time
}

const (
	// freeFailures per address before the first lock.
	freeFailures       = 5
	defaultLockoutBase = time.Second
	defaultLockoutMax  = 15 * time.Minute
)

func newLockout(base, longest time.Duration, log *slog.Logger) *lockout {
	if base <= 0 {
		base = defaultLockoutBase
	}
	if longest <= 0 {
		longest = defaultLockoutMax
	}
	return &lockout{free: freeFailures, base: base, max: max(base, longest), now: time.Now, log: log,
		by: expirable.NewLRU[netip.Addr, *guesser](8192, nil, 24*time.Hour)}
}

// locked reports whether ip is locked out now.
func (l *lockout) locked(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Peek(ip)
	return ok && l.now().Before(g.until)
}

// fail records a failed login from ip; past the free ones it starts a lock
// (logged once, with the address).
func (l *lockout) fail(ip netip.Addr, protocol string) {
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
	d := min(l.base<<min(g.fails-l.free-1, 20), l.max)
	g.until = l.now().Add(d)
	l.log.Warn("inbound: address locked out after failed logins; every IMAP/POP3 login from it is refused until the lock ends",
		"client", ip.String(), "protocol", protocol, "failed_logins", g.fails, "locked_for", d.String())
}

// success forgets ip's failures.
func (l *lockout) success(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by.Remove(ip)
}
