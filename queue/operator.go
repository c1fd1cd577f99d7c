package queue

// The queue's operator API: what the admin page, the JSON API and the CLI
// see and do (list, show, retry, flush, delete, requeue, stats, pause).

import (
	"container/heap"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Pause stops deliveries for account until Resume. Its messages wait
// without using up attempts; max age still applies.
func (q *Queue) Pause(account, reason string) {
	q.mu.Lock()
	_, was := q.paused[account]
	q.paused[account] = reason
	q.mu.Unlock()
	if !was {
		q.log.Warn("queue: account paused", "account", account, "reason", reason)
	}
}

// Resume lets account deliver again and makes its messages due at once.
func (q *Queue) Resume(account string) {
	q.mu.Lock()
	_, was := q.paused[account]
	delete(q.paused, account)
	now := q.now()
	for _, it := range q.items {
		if it.meta.Account == account && it.where == inHeap && it.next.After(now) {
			it.next = now
			heap.Fix(&q.waiting, it.index)
		}
	}
	q.mu.Unlock()
	if was {
		q.log.Info("queue: account resumed", "account", account)
	}
	q.poke()
}

// Paused reports whether account is paused, and why.
func (q *Queue) Paused(account string) (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r, ok := q.paused[account]
	return r, ok
}

// MessageState is a message's state as a whole, for listings.
type MessageState string

const (
	MsgQueued   MessageState = "queued"   // not attempted yet
	MsgDeferred MessageState = "deferred" // attempted, waiting for a retry
	MsgInflight MessageState = "inflight" // being delivered now
	MsgPaused   MessageState = "paused"   // its account is paused
	MsgFailed   MessageState = "failed"   // finished with failures; in failed/
)

// MessageStates lists every state, in the order a message goes through
// them (for filters, metrics and help texts).
func MessageStates() []MessageState {
	return []MessageState{MsgQueued, MsgInflight, MsgDeferred, MsgPaused, MsgFailed}
}

// Message is a message with its overall state.
type Message struct {
	*Meta
	State        MessageState `json:"state"`
	PausedReason string       `json:"paused_reason,omitempty"`
	// Held says why a message that is due is not being sent (Microsoft
	// 365 cannot be reached); empty otherwise.
	Held string `json:"held,omitempty"`
}

// Filter selects messages; empty fields match everything.
type Filter struct {
	State   MessageState
	Account string
}

// stateOf is a live message's overall state; caller holds q.mu.
func (q *Queue) stateOf(it *item) MessageState {
	_, paused := q.paused[it.meta.Account]
	switch {
	case it.where == inFlight:
		return MsgInflight
	case paused:
		return MsgPaused
	case it.meta.Attempts == 0:
		return MsgQueued
	}
	return MsgDeferred
}

func (q *Queue) describe(it *item) Message {
	msg := Message{Meta: it.meta.clone(), State: q.stateOf(it)}
	if msg.State == MsgPaused {
		msg.PausedReason = q.paused[it.meta.Account]
	}
	if q.outage != nil && msg.State != MsgPaused && msg.State != MsgInflight {
		msg.Held = q.outageWords()
	}
	return msg
}

// outageWords says what an outage means for a message; caller holds q.mu.
func (q *Queue) outageWords() string {
	o := q.outage
	return fmt.Sprintf("Microsoft 365 cannot be reached since %s (%s); all mail is held without using attempts and goes out as soon as a probe gets through (next probe in %s)",
		o.since.UTC().Format("15:04:05 MST"), o.reason, max(o.probeAt.Sub(q.now()), 0).Round(time.Second))
}

// List returns the messages matching f, oldest first.
func (q *Queue) List(f Filter) []Message {
	q.mu.Lock()
	var out []Message
	for _, it := range q.items {
		msg := q.describe(it)
		if (f.State == "" || f.State == msg.State) && (f.Account == "" || f.Account == msg.Account) {
			out = append(out, msg)
		}
	}
	for _, m := range q.failed {
		if (f.State == "" || f.State == MsgFailed) && (f.Account == "" || f.Account == m.Account) {
			out = append(out, Message{Meta: m.clone(), State: MsgFailed})
		}
	}
	q.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns one message, live or failed.
func (q *Queue) Get(id string) (Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it, ok := q.items[id]; ok {
		return q.describe(it), nil
	}
	if m, ok := q.failed[id]; ok {
		return Message{Meta: m.clone(), State: MsgFailed}, nil
	}
	return Message{}, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// OpenBody returns the bytes of a live or failed message.
func (q *Queue) OpenBody(id string) (io.ReadCloser, error) {
	q.mu.Lock()
	_, live := q.items[id]
	_, failed := q.failed[id]
	q.mu.Unlock()
	switch {
	case live:
		return q.store.openBody(id)
	case failed:
		return q.store.openFailedBody(id)
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// RetryNow makes a live message due at once.
func (q *Queue) RetryNow(id string) error {
	q.mu.Lock()
	it, ok := q.items[id]
	if !ok {
		_, failed := q.failed[id]
		q.mu.Unlock()
		if failed {
			return fmt.Errorf("%w: %s is in failed/; requeue it instead", ErrNotFound, id)
		}
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if reason, paused := q.paused[it.meta.Account]; paused {
		q.mu.Unlock()
		return pausedError(it.meta.Account, reason)
	}
	if q.outage != nil {
		words := q.outageWords()
		q.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrHeld, words)
	}
	if it.where == inHeap {
		it.next = q.now()
		heap.Fix(&q.waiting, it.index)
	}
	q.mu.Unlock()
	q.poke()
	return nil
}

func pausedError(account, reason string) error {
	return fmt.Errorf("%w: %s waits because account %s is paused: %s. Its messages keep their attempts and are sent as soon as the account is fixed: reconnect it, or fix it on Microsoft's side and press Try again on the account (oauthrelay accounts retry %s)",
		ErrPaused, "the message", account, strings.TrimSuffix(reason, "."), account)
}

// FlushResult is what Flush did.
type FlushResult struct {
	// Scheduled messages are due now.
	Scheduled int `json:"scheduled_now"`
	// Paused counts, per paused account, the messages that stay put, and
	// Why says why and what to do.
	Paused map[string]int    `json:"paused,omitempty"`
	Why    map[string]string `json:"why,omitempty"`
	// Held, when set, says that nothing can be sent now: Microsoft 365
	// cannot be reached (Scheduled counts what goes out once it can).
	Held string `json:"held,omitempty"`
}

// Flush makes every live message due at once, except those of paused
// accounts, which it counts separately.
func (q *Queue) Flush() FlushResult {
	q.mu.Lock()
	now := q.now()
	res := FlushResult{}
	for _, it := range q.items {
		if reason, paused := q.paused[it.meta.Account]; paused {
			if res.Paused == nil {
				res.Paused, res.Why = map[string]int{}, map[string]string{}
			}
			res.Paused[it.meta.Account]++
			res.Why[it.meta.Account] = reason + " — reconnect the account, or fix it on Microsoft's side and press Try again on it (oauthrelay accounts retry " + it.meta.Account + ")"
			continue
		}
		if it.where == inHeap {
			it.next = now
		}
		res.Scheduled++
	}
	heap.Init(&q.waiting)
	if q.outage != nil {
		res.Held = q.outageWords()
	}
	q.mu.Unlock()
	q.poke()
	return res
}

// Delete removes a live or failed message for good.
func (q *Queue) Delete(id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it, ok := q.items[id]; ok {
		switch it.where {
		case inFlight:
			return fmt.Errorf("%w: %s", ErrBusy, id)
		case inHeap:
			heap.Remove(&q.waiting, it.index)
		case inReady:
			a := it.meta.Account
			for i, r := range q.ready[a] {
				if r == it {
					q.ready[a] = append(q.ready[a][:i:i], q.ready[a][i+1:]...)
					break
				}
			}
		}
		if err := q.store.removeLive(id); err != nil {
			return err
		}
		delete(q.items, id)
		q.log.Info("queue: message deleted", "id", id)
		return nil
	}
	if _, ok := q.failed[id]; ok {
		if err := q.store.removeFailed(id); err != nil {
			return err
		}
		delete(q.failed, id)
		q.log.Info("queue: failed message deleted", "id", id)
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Requeue makes a failed message live again (under a new ID) for its failed
// recipients, with a fresh attempt count and max age.
func (q *Queue) Requeue(id string) (string, error) {
	q.mu.Lock()
	old, ok := q.failed[id]
	q.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("%w: %s is not in failed/", ErrNotFound, id)
	}
	now := q.now()
	m := old.clone()
	m.ID = newID(now)
	m.RequeuedFrom = id
	m.Attempts, m.LastAttempt, m.NextAttempt, m.AgeFrom = 0, time.Time{}, now, now
	m.Finished, m.Bounced = time.Time{}, false
	for i := range m.Recipients {
		if m.Recipients[i].State == StateFailed {
			m.Recipients[i].State, m.Recipients[i].Updated = StateQueued, now
		}
	}
	if err := q.store.requeue(id, m); err != nil {
		return "", err
	}
	q.mu.Lock()
	delete(q.failed, id)
	it := &item{meta: m, next: now}
	q.items[m.ID] = it
	q.makeReady(it)
	q.mu.Unlock()
	q.log.Info("queue: requeued", "id", m.ID, "from", id)
	q.poke()
	return m.ID, nil
}

// CheckWritable reports whether the spool accepts a durable write now
// (ErrDiskFull while its disk is full).
func (q *Queue) CheckWritable() error { return q.store.checkWritable() }

// DiskFull reports whether new mail is refused because the spool's disk is
// full, and since when.
func (q *Queue) DiskFull() (since time.Time, full bool) { return q.store.diskFull() }

// Stats summarises the queue.
type Stats struct {
	Messages  int                             `json:"messages"`
	ByState   map[MessageState]int            `json:"by_state"`
	ByAccount map[string]map[MessageState]int `json:"by_account"`
	Oldest    time.Time                       `json:"oldest,omitzero"` // arrival of the oldest live message
	Bytes     int64                           `json:"bytes"`           // message bodies (live and failed)
	LogBytes  int64                           `json:"log_bytes"`       // the log segments on disk
	Paused    map[string]string               `json:"paused,omitempty"`
	// UpstreamDown says why Microsoft 365 cannot be reached (empty: it
	// can), since when, and when the next probe is.
	UpstreamDown      string    `json:"upstream_down,omitempty"`
	UpstreamDownSince time.Time `json:"upstream_down_since,omitzero"`
	NextProbe         time.Time `json:"next_probe,omitzero"`
}

// Stats counts messages by state and account from memory (no disk I/O:
// it runs on every status page view and metrics scrape).
func (q *Queue) Stats() Stats {
	st := Stats{ByState: map[MessageState]int{}, ByAccount: map[string]map[MessageState]int{}, Paused: map[string]string{}}
	count := func(account string, state MessageState, size int64) {
		st.Messages++
		st.ByState[state]++
		if st.ByAccount[account] == nil {
			st.ByAccount[account] = map[MessageState]int{}
		}
		st.ByAccount[account][state]++
		st.Bytes += size
	}
	st.LogBytes = q.store.logBytes()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, it := range q.items {
		m := it.meta
		count(m.Account, q.stateOf(it), m.Size)
		if st.Oldest.IsZero() || m.Arrived.Before(st.Oldest) {
			st.Oldest = m.Arrived
		}
	}
	for _, m := range q.failed {
		count(m.Account, MsgFailed, m.Size)
	}
	for a, r := range q.paused {
		st.Paused[a] = r
	}
	if o := q.outage; o != nil {
		st.UpstreamDown, st.UpstreamDownSince, st.NextProbe = o.reason, o.since, o.probeAt
	}
	return st
}
