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
		if d, n := l.Fail("a"); d != want || n != i+1 {
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
	l.Success("a")
	if d, n := l.Fail("a"); d != 0 || n != 1 {
		t.Errorf("after a success: lock %s, count %d", d, n)
	}
}
