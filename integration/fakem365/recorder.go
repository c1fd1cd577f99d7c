package fakem365

import (
	"sync"
	"time"
)

// Recorder keeps what a fake server accepted, in order, and lets a test
// wait for it. The zero value is ready. The fake Google's SMTP uses it too.
type Recorder[T any] struct {
	mu     sync.Mutex
	items  []T
	notify chan struct{}
}

// Add records v and wakes whoever waits.
func (r *Recorder[T]) Add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, v)
	if r.notify != nil {
		close(r.notify)
		r.notify = nil
	}
}

// All returns a copy of what was recorded so far.
func (r *Recorder[T]) All() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.items...)
}

// Len is how many were recorded.
func (r *Recorder[T]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.items)
}

// Wait blocks until at least n were recorded or timeout passes, and
// returns what was recorded.
func (r *Recorder[T]) Wait(n int, timeout time.Duration) []T {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		if len(r.items) >= n {
			out := append([]T(nil), r.items...)
			r.mu.Unlock()
			return out
		}
		if r.notify == nil {
			r.notify = make(chan struct{})
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return r.All()
		}
	}
}
