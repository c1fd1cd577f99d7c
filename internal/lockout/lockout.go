// Package lockout makes guessing a secret slow, per client address: the
// admin token (relay/admin), SMTP AUTH (relay) and IMAP/POP3 logins
// (inbound) share it. An address gets a few failures free; each further one
// locks it out for a growing period (base, 2×base, 4×base, … up to max),
// during which every attempt from it — right or wrong — is to be refused
// without being checked. A success outside a lock forgets the failures the
// address made for the same user (a typo), not those for others: one valid
// login must not let its holder guess another user's password without
// limit. It remembers at most 8192 addresses, each for a day. Callers log a lock
// (Fail says when one starts), in their own words.
package lockout

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Defaults for New's base and longest.
const (
	DefaultBase = time.Second
	DefaultMax  = 15 * time.Minute
)

// Lockout tracks failures by key (a client address).
type Lockout[K comparable] struct {
	free      int           // failures before the first lock
	base, max time.Duration // first lock, longest lock
	// Now is the clock (tests set it).
	Now func() time.Time

	mu sync.Mutex
	by *expirable.LRU[K, *guesser]
}

type guesser struct {
	fails int
	until time.Time
	// by counts the failures per user tried (at most maxUsers of them;
	// failures for further users count but no success forgets them).
	by map[string]int
}

const maxUsers = 64

// New gives free failures before the first lock of base, doubling up to
// longest (0: DefaultBase, DefaultMax).
func New[K comparable](free int, base, longest time.Duration) *Lockout[K] {
	if base <= 0 {
		base = DefaultBase
	}
	if longest <= 0 {
		longest = DefaultMax
	}
	return &Lockout[K]{free: free, base: base, max: max(base, longest), Now: time.Now,
		by: expirable.NewLRU[K, *guesser](8192, nil, 24*time.Hour)}
}

// Locked reports whether k is locked out now, and for how long still.
func (l *Lockout[K]) Locked(k K) (left time.Duration, locked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Peek(k)
	if !ok {
		return 0, false
	}
	left = g.until.Sub(l.Now())
	return left, left > 0
}

// Fail records a failure from k trying user ("" where there is none, as
// for the admin token). Past the free ones it starts a lock and returns
// its length (0 otherwise) and how many failures k has made, for the
// caller's log line.
func (l *Lockout[K]) Fail(k K, user string) (lockedFor time.Duration, fails int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Get(k)
	if !ok {
		g = &guesser{by: map[string]int{}}
		l.by.Add(k, g)
	}
	g.fails++
	if _, known := g.by[user]; known || len(g.by) < maxUsers {
		g.by[user]++
	}
	if g.fails <= l.free {
		return 0, g.fails
	}
	d := min(l.base<<min(g.fails-l.free-1, 20), l.max)
	g.until = l.Now().Add(d)
	return d, g.fails
}

// Success forgets the failures k made for user.
func (l *Lockout[K]) Success(k K, user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.by.Peek(k)
	if !ok {
		return
	}
	g.fails -= g.by[user]
	delete(g.by, user)
	if g.fails <= 0 {
		l.by.Remove(k)
	}
}
