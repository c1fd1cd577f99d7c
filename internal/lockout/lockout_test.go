package lockout

import (
	"testing"
	"time"
)

// Free failures, then locks of base doubling up to max; a success resets.
func TestLockout_DoublesUpToMaxAndSuccessResets(t *testing.T) {
	now := time.Unix(0, 0)
	l := New[string](2, time.Second, 4*time.Second)
	l.Now = func() time.Time { return now }
	for i, want := range []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if d, n := l.Fail("a", "u"); d != want || n != i+1 {
			t.Fatalf("failure %d: lock %s, count %d; want %s, %d", i+1, d, n, want, i+1)
		}
	}
	if left, locked := l.Locked("a"); !locked || left != 4*time.Second {
		t.Errorf("locked %v for %s", locked, left)
	}
	if _, locked := l.Locked("b"); locked {
		t.Error("another address is locked")
	}
	now = now.Add(5 * time.Second)
	if _, locked := l.Locked("a"); locked {
		t.Error("still locked after the lock ended")
	}
	l.Success("a", "u")
	if d, n := l.Fail("a", "u"); d != 0 || n != 1 {
		t.Errorf("after a success: lock %s, count %d", d, n)
	}
}

// A success forgets the failures for its own user only: one valid login
// does not reset the count of guesses at another user's password.
func TestLockout_SuccessForgetsOnlyItsUser(t *testing.T) {
	l := New[string](5, time.Second, time.Minute)
	for round := range 10 {
		for range 5 {
			l.Fail("a", "victim")
		}
		l.Success("a", "attacker")
		if _, locked := l.Locked("a"); !locked && round > 0 {
			t.Fatalf("round %d: %d guesses at victim's password and no lock", round, 5*(round+1))
		}
	}
	l2 := New[string](5, time.Second, time.Minute)
	for range 3 {
		l2.Fail("b", "me")
	}
	l2.Success("b", "me") // a typo, then the right password
	if _, n := l2.Fail("b", "me"); n != 1 {
		t.Errorf("after my own success the count is %d, want 1", n)
	}
}
