package inbound

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// A successful login is remembered for LoginCacheTTL: bcrypt is not run
// again for the same user and password (shown by changing the stored hash
// behind the cache's back); a wrong password is never remembered; after the
// TTL bcrypt decides again.
func TestServer_LoginCacheSkipsBcryptForRecentLogins(t *testing.T) {
	_, pool := testTLS(t)
	h := newHarness(t, pool, "127.0.0.1:1", "127.0.0.1:1", &fakeTokens{tokens: []string{"tok"}}, nil)
	now := time.Unix(1e9, 0)
	h.srv.logins.now = func() time.Time { return now }
	ip := netip.MustParseAddr("127.0.0.1")
	check := func(pass, want string) {
		t.Helper()
		account, result := h.srv.checkPassword(ip, IMAP, "app", pass)
		if got := account + result; got != want {
			t.Errorf("login with %q: got %q, want %q", pass, got, want)
		}
	}
	check("wrong", LoginBadPassword)
	check("apppw", testAccount)

	// The password changes (bcrypt would now refuse "apppw").
	hash, _ := bcrypt.GenerateFromPassword([]byte("newpw"), bcrypt.MinCost)
	u := h.srv.opts.Users.by["app"]
	u.hash = hash
	h.srv.opts.Users.by["app"] = u

	check("apppw", testAccount) // from the cache
	check("wrong", LoginBadPassword)
	check("wrong", LoginBadPassword) // a failure was not cached
	now = now.Add(5*time.Minute - time.Second)
	check("apppw", testAccount)
	now = now.Add(time.Second)
	check("apppw", LoginBadPassword) // expired: bcrypt says no
	check("newpw", testAccount)
}

func TestLoginCache_OffAndFull(t *testing.T) {
	off := newLoginCache(-1, 10, time.Now)
	off.put("u", "p", "a")
	if _, ok := off.get("u", "p"); ok {
		t.Error("a cache with a negative TTL remembered a login")
	}
	now := time.Unix(1e9, 0)
	c := newLoginCache(time.Minute, 2, func() time.Time { return now })
	c.put("u1", "p", "a")
	c.put("u2", "p", "a")
	c.put("u3", "p", "a") // full of live logins: not kept
	if _, ok := c.get("u3", "p"); ok {
		t.Error("kept a login beyond max")
	}
	now = now.Add(time.Minute)
	c.put("u3", "p", "a") // the expired ones make room
	if _, ok := c.get("u3", "p"); !ok {
		t.Error("expired logins did not make room")
	}
	if _, ok := c.get("u1", "p"); ok {
		t.Error("an expired login was used")
	}
}
