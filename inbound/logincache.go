package inbound

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// loginCache remembers successful local logins for a short time, so that a
// client reconnecting every minute (fetchmail, a ticketing system's poller)
// does not pay bcrypt each time. It is in memory only, and keyed by the
// user and an HMAC of user and password under a key drawn at start: it
// holds no password, and nothing that can be checked against a guess
// without the process's memory. Only a login that bcrypt accepted is put
// in; a wrong password never is, and always costs bcrypt. A changed users
// file takes effect at restart, which empties the cache.
type loginCache struct {
	ttl time.Duration
	max int
	now func() time.Time
	key [32]byte

	mu sync.Mutex
	by map[[sha256.Size]byte]cachedLogin
}

type cachedLogin struct {
	account string
	expires time.Time
}

// newLoginCache returns a cache keeping logins for ttl (none when ttl <=
// 0), at most max of them.
func newLoginCache(ttl time.Duration, max int, now func() time.Time) *loginCache {
	c := &loginCache{ttl: ttl, max: max, now: now, by: map[[sha256.Size]byte]cachedLogin{}}
	rand.Read(c.key[:])
	return c
}

func (c *loginCache) id(user, pass string) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var id [sha256.Size]byte
	copy(id[:], m.Sum(nil))
	return id
}

// get returns the account of a login bcrypt accepted within ttl.
func (c *loginCache) get(user, pass string) (account string, ok bool) {
	if c.ttl <= 0 {
		return "", false
	}
	id := c.id(user, pass)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.by[id]
	if !ok {
		return "", false
	}
	if !c.now().Before(e.expires) {
		delete(c.by, id)
		return "", false
	}
	return e.account, true
}

// put records a login bcrypt accepted; caller must never put one it
// refused.
func (c *loginCache) put(user, pass, account string) {
	if c.ttl <= 0 {
		return
	}
	id := c.id(user, pass)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.by) >= c.max {
		for k, e := range c.by {
			if !now.Before(e.expires) {
				delete(c.by, k)
			}
		}
		if len(c.by) >= c.max {
			return // full of live logins: this one pays bcrypt next time
		}
	}
	c.by[id] = cachedLogin{account: account, expires: now.Add(c.ttl)}
}
