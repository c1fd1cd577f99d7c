package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Outcome is what happened to one recipient in one attempt.
type Outcome int

const (
	Deferred  Outcome = iota // temporary: retried on schedule
	Delivered                // upstream answered 2xx
	Failed                   // permanent: the sender is told
)

// RcptResult is the outcome for one recipient.
type RcptResult struct {
	Addr    string
	Outcome Outcome
	Reply   Reply
}

// Result is what a Deliverer reports for one attempt.
type Result struct {
	// Recipients has an entry per recipient of the Delivery; one without an
	// entry is deferred.
	Recipients []RcptResult
	// PauseAccount, when set, says the account cannot send at all (its token
	// cannot be obtained, Microsoft refuses its login). The attempt is not
	// counted, recipients keep their state, nothing bounces, and the account
	// is paused with this reason until Resume.
	PauseAccount string
	// RetryAfter asks that the next attempt come no sooner (throttling).
	RetryAfter time.Duration
	// Concurrency, when not 0, changes how many deliveries of the account
	// run at once from now on: n > 0 at most n (Microsoft throttles), -1
	// back to Options.AccountConcurrency.
	Concurrency int
	// Unreachable, when set, says the upstream could not be reached at all
	// (connection refused, DNS, TLS handshake, timeout, 421 at the
	// greeting): an outage of the upstream, not this message's failure.
	// The attempt is not counted, and every delivery waits while the queue
	// probes the upstream with one attempt at growing intervals.
	Unreachable string
}

// Delivery is one attempt at one message, for its pending recipients.
type Delivery struct {
	ID       string
	Account  string
	From     string
	To       []string
	SMTPUTF8 bool
	EightBit bool
	IsBounce bool
	Attempt  int
	Size     int64
	Arrived  time.Time
	open     func() (io.ReadCloser, error)
}

// Open returns the message bytes; the caller must close it.
func (d *Delivery) Open() (io.ReadCloser, error) { return d.open() }

// Deliverer attempts deliveries. Deliver must return when ctx is done.
type Deliverer interface {
	Deliver(ctx context.Context, d *Delivery) Result
}

// DelivererFunc adapts a function to Deliverer.
type DelivererFunc func(ctx context.Context, d *Delivery) Result

func (f DelivererFunc) Deliver(ctx context.Context, d *Delivery) Result { return f(ctx, d) }

// Bounce is handed to the bounce hook once per finished message with failed
// recipients (never for the null sender or for a bounce).
type Bounce struct {
	Meta   *Meta
	Failed []Recipient
	// Open returns the original message, for its headers.
	Open func() (io.ReadCloser, error)
}

// BounceFunc sends a DSN; it should enqueue it durably before returning.
type BounceFunc func(ctx context.Context, b *Bounce) error

// RetryPolicy says when attempts are made.
type RetryPolicy struct {
	// Delays after the 1st, 2nd, … failed attempt; the last repeats.
	Delays []time.Duration
	// Jitter spreads each delay by ± this fraction.
	Jitter float64
	// MaxAge after which pending recipients fail with 4.4.7.
	MaxAge time.Duration
}

// DefaultRetry is 1m, 5m, 15m, 30m, 1h, 2h, 4h, then every 4h, ±10%, for 5 days.
func DefaultRetry() RetryPolicy {
	return RetryPolicy{
		Delays: []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour},
		Jitter: 0.1,
		MaxAge: 5 * 24 * time.Hour,
	}
}

// Delay is the wait after failed attempt number attempt (1-based). rnd
// returns a number in [0, 1); nil uses math/rand.
func (p RetryPolicy) Delay(attempt int, rnd func() float64) time.Duration {
	if len(p.Delays) == 0 {
		return time.Minute
	}
	i := min(max(attempt, 1), len(p.Delays)) - 1
	d := p.Delays[i]
	if p.Jitter > 0 {
		if rnd == nil {
			rnd = rand.Float64
		}
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rnd()-1)))
	}
	return d
}

// Options configure a Queue. Timings are fields so tests run in milliseconds.
type Options struct {
	Dir       string
	Deliverer Deliverer
	Bounce    BounceFunc // nil: failed messages are kept in failed/ without a DSN
	// Workers is how many deliveries run at once over all accounts.
	Workers int
	// AccountConcurrency is how many deliveries of one account run at once.
	AccountConcurrency int
	Retry              RetryPolicy
	// FailedRetention: failed/ messages older than this are removed.
	FailedRetention time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
	// stepHook, set by this package's crash tests, is called between the
	// write steps of Enqueue.
	stepHook func(step string)
	// InlineMax: bodies up to this many bytes are stored in the log with
	// their meta; larger ones in msg/. 0 means 128 KiB.
	InlineMax int
	// SegmentMax: a log segment is closed once it holds this many bytes.
	// 0 means 16 MiB.
	SegmentMax int64
	// ProbeMin and ProbeMax bound the wait between probes of an
	// unreachable upstream (it doubles from ProbeMin). 0: 1 s and 30 s.
	ProbeMin, ProbeMax time.Duration
	// DiskReserve: bytes kept allocated in spool/reserve and released when
	// the disk fills, so queued mail can still be delivered (its attempt
	// and removal records need room). 0 means 8 MiB; negative: none.
	DiskReserve int64
}

// Errors returned by operations.
var (
	ErrNotFound = errors.New("no such message")
	ErrBusy     = errors.New("message is being delivered right now; try again in a moment")
	ErrClosed   = errors.New("queue is closed")
	// ErrPaused: the message's account is paused; retrying the message
	// cannot move it (the error says why and what to do).
	ErrPaused = errors.New("account paused")
	// ErrHeld: Microsoft 365 cannot be reached; nothing is sent until a
	// probe gets through (the error says since when and the next probe).
	ErrHeld = errors.New("held")
)

// Queue is the durable queue and its scheduler.
type Queue struct {
	opts  Options
	store *store
	log   *slog.Logger

	ctx    context.Context // delivery context, cancelled at the Close deadline
	cancel context.CancelFunc
	kick   chan struct{}
	done   chan struct{}
	loop   sync.WaitGroup
	wg     sync.WaitGroup // deliveries in flight

	mu       sync.Mutex
	closing  bool
	items    map[string]*item
	waiting  itemHeap           // not yet due, by next attempt
	ready    map[string][]*item // due, per account, FIFO
	order    []string           // accounts in round-robin order
	inOrder  map[string]bool    // accounts already in order
	rr       int                // next account to serve
	paused   map[string]string  // account -> reason
	limits   map[string]int     // account -> concurrency override
	inflight map[string]int     // account -> deliveries running
	running  int                // deliveries running in all
	failed   map[string]*Meta   // failed/ by id
	outage   *outage            // the upstream is unreachable; nil: it is not
}

// outage is an unreachable upstream: deliveries wait, one probe at a time.
type outage struct {
	since   time.Time
	reason  string
	wait    time.Duration // before the next probe; doubles up to ProbeMax
	probeAt time.Time
	probing bool
}

type place int

const (
	inHeap place = iota
	inReady
	inFlight
)

type item struct {
	meta  *Meta // as last written to disk; immutable once set (readers clone it)
	next  time.Time
	index int // in waiting, when where == inHeap
	where place
}

type itemHeap []*item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h itemHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *itemHeap) Push(x any)        { it := x.(*item); it.index = len(*h); *h = append(*h, it) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.index = -1
	return it
}

// Open opens (creating if needed) the spool at opts.Dir, recovers it from
// any earlier stop, and starts the scheduler.
func Open(opts Options) (*Queue, error) {
	if opts.Deliverer == nil {
		return nil, errors.New("queue: Options.Deliverer is required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.AccountConcurrency <= 0 {
		opts.AccountConcurrency = 3
	}
	if len(opts.Retry.Delays) == 0 && opts.Retry.MaxAge == 0 {
		opts.Retry = DefaultRetry()
	}
	if opts.Retry.MaxAge <= 0 {
		opts.Retry.MaxAge = DefaultRetry().MaxAge
	}
	if opts.FailedRetention <= 0 {
		opts.FailedRetention = 7 * 24 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProbeMin <= 0 {
		opts.ProbeMin = time.Second
	}
	if opts.ProbeMax <= 0 {
		opts.ProbeMax = 30 * time.Second
	}
	st, err := openStore(opts.Dir, opts.stepHook, opts.Logger)
	if err != nil {
		return nil, err
	}
	if opts.InlineMax > 0 {
		st.inlineMax = min(opts.InlineMax, recMax/2)
	}
	if opts.SegmentMax > 0 {
		st.segMax = opts.SegmentMax
	}
	if opts.DiskReserve != 0 {
		st.reserve = max(opts.DiskReserve, 0)
	}
	live, failed, err := st.recoverSpool()
	if err != nil {
		st.abort()
		return nil, fmt.Errorf("queue: recovering %s: %w", opts.Dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{
		opts: opts, store: st, log: opts.Logger,
		ctx: ctx, cancel: cancel,
		kick: make(chan struct{}, 1), done: make(chan struct{}),
		items: map[string]*item{}, ready: map[string][]*item{},
		paused: map[string]string{}, limits: map[string]int{}, inflight: map[string]int{},
		inOrder: map[string]bool{},
		failed:  map[string]*Meta{},
	}
	for _, m := range live {
		m = interrupted(m)
		it := &item{meta: m, next: m.NextAttempt}
		q.items[m.ID] = it
		heap.Push(&q.waiting, it)
	}
	for _, m := range failed {
		q.failed[m.ID] = m
	}
	q.pruneFailed()
	if len(live) > 0 || len(failed) > 0 {
		q.log.Info("queue: opened", "dir", opts.Dir, "live", len(live), "failed", len(failed))
	}
	q.loop.Add(1)
	go q.run()
	return q, nil
}

func (q *Queue) now() time.Time { return q.opts.Now() }

// interrupted shows recipients whose attempt a stop cut short (still
// inflight on disk) as deferred, with a reply saying so; the attempt was
// counted and its retry time set before it began, so it is retried then.
// Nothing is written: the next attempt's record says the rest.
func interrupted(m *Meta) *Meta {
	var c *Meta
	for i, r := range m.Recipients {
		if r.State != StateInflight {
			continue
		}
		if c == nil {
			c = m.clone()
		}
		c.Recipients[i].State = StateDeferred
		c.Recipients[i].Last = &Reply{Code: 451, Enhanced: "4.3.0", Text: "the relay stopped during this attempt; it is tried again at the next attempt time"}
	}
	if c == nil {
		return m
	}
	return c
}

func (q *Queue) poke() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Enqueue stores a message durably and schedules it at once. It returns only
// after body and meta are on disk (fsynced, renamed, directories fsynced);
// the caller may acknowledge the message then and not before. Disk errors
// wrap ErrDiskTrouble. The body is streamed, never held in memory.
func (q *Queue) Enqueue(ctx context.Context, env Envelope, body io.Reader) (string, error) {
	if len(env.To) == 0 {
		return "", errors.New("queue: envelope has no recipients")
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	q.mu.Lock()
	closing := q.closing
	q.mu.Unlock()
	if closing {
		return "", ErrClosed
	}
	now := q.now()
	id := newID(now)
	m, err := q.store.enqueue(id, body, func(size int64) *Meta {
		m := &Meta{
			Version: MetaVersion, ID: id, From: env.From, Account: env.Account,
			SMTPUTF8: env.SMTPUTF8, EightBit: env.EightBit, IsBounce: env.IsBounce,
			ClientAddr: env.ClientAddr, Size: size, Arrived: now, AgeFrom: now, NextAttempt: now,
		}
		for _, to := range env.To {
			m.Recipients = append(m.Recipients, Recipient{Addr: to, State: StateQueued, Updated: now})
		}
		return m
	})
	if err != nil {
		return "", err
	}
	q.mu.Lock()
	it := &item{meta: m, next: now}
	q.items[id] = it
	q.makeReady(it)
	q.mu.Unlock()
	q.poke()
	return id, nil
}

// makeReady appends it to its account's ready list; caller holds q.mu.
func (q *Queue) makeReady(it *item) {
	a := it.meta.Account
	if !q.inOrder[a] {
		q.inOrder[a] = true
		q.order = append(q.order, a)
	}
	it.where = inReady
	q.ready[a] = append(q.ready[a], it)
}

func (q *Queue) limit(account string) int {
	if n, ok := q.limits[account]; ok {
		return n
	}
	return q.opts.AccountConcurrency
}

// run is the scheduler: a heap ordered by next attempt and one timer; no
// polling. It wakes on the timer, on a kick (enqueue, finished delivery,
// resume, retry) or to prune failed/.
func (q *Queue) run() {
	defer q.loop.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	prune := time.NewTicker(min(time.Hour, q.opts.FailedRetention))
	defer prune.Stop()
	for {
		wake := q.schedule()
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		if wake > 0 {
			timer.Reset(wake)
		}
		select {
		case <-q.done:
			return
		case <-q.kick:
		case <-timer.C:
		case <-prune.C:
			q.mu.Lock()
			q.pruneFailed()
			q.mu.Unlock()
		}
	}
}

// schedule moves due items to ready, expires what waits too long on a
// paused account, starts deliveries within the limits, and returns how long
// to sleep (0: nothing to wait for).
func (q *Queue) schedule() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return 0
	}
	now := q.now()
	for q.waiting.Len() > 0 && !q.waiting[0].next.After(now) {
		q.makeReady(heap.Pop(&q.waiting).(*item))
	}
	var wake time.Time
	held := q.paused
	if q.outage != nil {
		// Everything waits for the upstream; expire what waits too long.
		held = map[string]string{}
		for a := range q.ready {
			held[a] = q.paused[a]
		}
	}
	for a, reason := range held {
		if len(q.ready[a]) == 0 {
			continue
		}
		keep := q.ready[a][:0]
		for _, it := range q.ready[a] {
			exp := it.meta.AgeFrom.Add(q.opts.Retry.MaxAge)
			if !now.Before(exp) {
				if reason == "" {
					reason = "Microsoft 365 could not be reached: " + q.outage.reason
				}
				q.start(it, reason)
				continue
			}
			if wake.IsZero() || exp.Before(wake) {
				wake = exp
			}
			keep = append(keep, it)
		}
		q.ready[a] = keep
	}
	if o := q.outage; o != nil {
		// One probe at a time, at growing intervals.
		if !o.probing && !now.Before(o.probeAt) && q.running < q.opts.Workers {
			if it := q.nextReady(); it != nil {
				o.probing = true
				q.start(it, "")
			}
		}
		if !o.probing && (wake.IsZero() || o.probeAt.Before(wake)) {
			wake = o.probeAt
		}
	} else {
		for q.running < q.opts.Workers {
			it := q.nextReady()
			if it == nil {
				break
			}
			q.start(it, "")
		}
	}
	if q.waiting.Len() > 0 && (wake.IsZero() || q.waiting[0].next.Before(wake)) {
		wake = q.waiting[0].next
	}
	if wake.IsZero() {
		return 0
	}
	return max(wake.Sub(now), time.Millisecond)
}

// nextReady picks the next item round-robin over accounts that are not
// paused and below their concurrency limit; caller holds q.mu.
func (q *Queue) nextReady() *item {
	for range len(q.order) {
		a := q.order[q.rr%len(q.order)]
		q.rr++
		if _, p := q.paused[a]; p || len(q.ready[a]) == 0 || q.inflight[a] >= q.limit(a) {
			continue
		}
		it := q.ready[a][0]
		q.ready[a] = q.ready[a][1:]
		return it
	}
	return nil
}

// start runs an attempt (or, with expireReason, an expiry) in a worker;
// caller holds q.mu.
func (q *Queue) start(it *item, pausedReason string) {
	it.where = inFlight
	a := it.meta.Account
	q.inflight[a]++
	q.running++
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		next, live := q.attempt(it, pausedReason)
		q.mu.Lock()
		q.inflight[a]--
		q.running--
		if live {
			if next.IsZero() {
				q.makeReady(it) // waits for Resume or the upstream
			} else {
				it.next = next
				it.where = inHeap
				heap.Push(&q.waiting, it)
			}
		}
		q.mu.Unlock()
		q.poke()
	}()
}

// attempt delivers it once. It returns the next attempt time and whether
// the message is still live; a zero time with live means "wait for resume".
func (q *Queue) attempt(it *item, pausedReason string) (time.Time, bool) {
	prev := it.meta
	now := q.now()
	deadline := prev.AgeFrom.Add(q.opts.Retry.MaxAge)
	if !now.Before(deadline) || pausedReason != "" {
		return q.expire(it, pausedReason)
	}
	m := prev.clone()
	m.Attempts++
	m.LastAttempt = now
	m.NextAttempt = q.nextTime(m, now, 0)
	var to []string
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State.Pending() {
			r.State, r.Updated = StateInflight, now
			to = append(to, r.Addr)
		}
	}
	if len(to) == 0 {
		return q.finish(it, m)
	}
	// Record before acting: a crash during delivery resumes at NextAttempt,
	// with the attempt counted, instead of looping.
	if err := q.store.writeMeta(m); err != nil {
		q.log.Error("queue: cannot record attempt; will retry", "id", m.ID, "error", err.Error())
		return now.Add(q.opts.Retry.Delay(1, nil)), true
	}
	q.setMeta(it, m)

	d := &Delivery{
		ID: m.ID, Account: m.Account, From: m.From, To: to,
		SMTPUTF8: m.SMTPUTF8, EightBit: m.EightBit, IsBounce: m.IsBounce,
		Attempt: m.Attempts, Size: m.Size, Arrived: m.Arrived,
		open: func() (io.ReadCloser, error) { return q.store.openBody(m.ID) },
	}
	res := q.deliver(d)
	now = q.now()
	if res.Concurrency != 0 {
		q.SetAccountConcurrency(m.Account, max(res.Concurrency, 0))
	}
	m = m.clone() // it.meta is shared with readers: never change it in place

	if res.PauseAccount != "" || res.Unreachable != "" {
		// Not the message's fault: undo the attempt, wait for Resume or
		// for the upstream to come back.
		back := prev.clone()
		if err := q.store.writeMeta(back); err != nil {
			q.log.Error("queue: cannot record pause", "id", m.ID, "error", err.Error())
		}
		q.setMeta(it, back)
		if res.PauseAccount != "" {
			q.upstreamReached()
			q.Pause(m.Account, res.PauseAccount)
		} else {
			q.upstreamUnreachable(res.Unreachable)
		}
		return time.Time{}, true
	}
	q.upstreamReached()

	byAddr := make(map[string]RcptResult, len(res.Recipients))
	for _, r := range res.Recipients {
		byAddr[r.Addr] = r
	}
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State != StateInflight {
			continue
		}
		rr, ok := byAddr[r.Addr]
		if !ok {
			rr = RcptResult{Outcome: Deferred, Reply: Reply{Code: 451, Enhanced: "4.4.0", Text: "delivery ended without a reply for this recipient"}}
		}
		reply := rr.Reply
		r.Last, r.Updated = &reply, now
		switch rr.Outcome {
		case Delivered:
			r.State = StateDelivered
		case Failed:
			r.State = StateFailed
		default:
			r.State = StateDeferred
		}
	}
	if len(m.Pending()) == 0 {
		return q.finish(it, m)
	}
	m.NextAttempt = q.nextTime(m, now, res.RetryAfter)
	if err := q.store.writeMeta(m); err != nil {
		q.log.Error("queue: cannot record attempt result", "id", m.ID, "error", err.Error())
	}
	q.setMeta(it, m)
	return m.NextAttempt, true
}

// deliver calls the Deliverer; a panic in it is recovered and logged with
// its stack, and every recipient deferred (the Deliverer should recover
// its own; this is the last line).
func (q *Queue) deliver(d *Delivery) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			q.log.Error("queue: delivery panicked; the message is deferred", "id", d.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res = Result{}
			for _, to := range d.To {
				res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: Deferred,
					Reply: Reply{Code: 451, Enhanced: "4.3.0", Text: "internal error in delivery (logged); will retry"}})
			}
		}
	}()
	return q.opts.Deliverer.Deliver(q.ctx, d)
}

// upstreamUnreachable starts an outage, or after a failed probe doubles
// the wait before the next one.
func (q *Queue) upstreamUnreachable(reason string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	o := q.outage
	switch {
	case o == nil:
		q.outage = &outage{since: now, reason: reason, wait: q.opts.ProbeMin, probeAt: now.Add(q.opts.ProbeMin)}
		q.log.Warn("queue: Microsoft 365 cannot be reached; holding all mail (no attempts used) and probing", "reason", reason, "probe_in", q.opts.ProbeMin.String())
	case o.probing:
		o.probing, o.reason = false, reason
		o.wait = min(o.wait*2, q.opts.ProbeMax)
		o.probeAt = now.Add(o.wait)
		q.log.Debug("queue: probe failed; Microsoft 365 still unreachable", "reason", reason, "next_probe_in", o.wait.String())
	}
}

// upstreamReached ends an outage: every held message flows now.
func (q *Queue) upstreamReached() {
	q.mu.Lock()
	o := q.outage
	q.outage = nil
	q.mu.Unlock()
	if o != nil {
		q.log.Info("queue: Microsoft 365 reachable again; sending the held mail", "was_down_for", q.now().Sub(o.since).Round(time.Second).String())
		q.poke()
	}
}

// nextTime is the retry time after m.Attempts failed attempts, never later
// than the max-age deadline (the message then expires on time).
func (q *Queue) nextTime(m *Meta, now time.Time, atLeast time.Duration) time.Time {
	d := max(q.opts.Retry.Delay(m.Attempts, nil), atLeast)
	next := now.Add(d)
	if deadline := m.AgeFrom.Add(q.opts.Retry.MaxAge); next.After(deadline) {
		next = deadline
	}
	return next
}

func (q *Queue) setMeta(it *item, m *Meta) {
	q.mu.Lock()
	it.meta = m
	q.mu.Unlock()
}

// expire fails every pending recipient with 4.4.7.
func (q *Queue) expire(it *item, pausedReason string) (time.Time, bool) {
	m := it.meta.clone()
	now := q.now()
	text := fmt.Sprintf("message expired: not delivered within %s", q.opts.Retry.MaxAge)
	switch {
	case strings.HasPrefix(pausedReason, "Microsoft 365 could not be reached"):
		text += "; " + pausedReason
	case pausedReason != "":
		text += "; the account " + m.Account + " needed reconnecting: " + pausedReason
	}
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if !r.State.Pending() {
			continue
		}
		t := text
		if r.Last != nil && pausedReason == "" {
			t += "; last reply: " + r.Last.String()
		}
		r.State, r.Updated = StateFailed, now
		r.Last = &Reply{Code: 451, Enhanced: "4.4.7", Text: t}
	}
	q.log.Warn("queue: message expired", "id", m.ID, "account", m.Account, "age", now.Sub(m.Arrived).Round(time.Second).String())
	return q.finish(it, m)
}

// finish ends a message with no pending recipient: bounce the failed ones
// (once, all together), then move it to failed/ or remove it.
func (q *Queue) finish(it *item, m *Meta) (time.Time, bool) {
	var failed []Recipient
	for _, r := range m.Recipients {
		if r.State == StateFailed {
			failed = append(failed, r)
		}
	}
	now := q.now()
	if len(failed) == 0 {
		if err := q.store.removeLive(m.ID); err != nil {
			q.log.Error("queue: cannot remove delivered message; will retry", "id", m.ID, "error", err.Error())
			q.setMeta(it, m)
			return now.Add(time.Minute), true
		}
		q.forget(m.ID)
		return time.Time{}, false
	}
	if m.From != "" && !m.IsBounce && !m.Bounced && q.opts.Bounce != nil {
		err := q.opts.Bounce(q.ctx, &Bounce{Meta: m.clone(), Failed: failed,
			Open: func() (io.ReadCloser, error) { return q.store.openBody(m.ID) }})
		if err != nil {
			q.log.Error("queue: could not send the bounce; the message stays in failed/", "id", m.ID, "error", err.Error())
		} else {
			m.Bounced = true
		}
	}
	m.Finished = now
	if err := q.store.moveToFailed(m); err != nil {
		q.log.Error("queue: cannot move message to failed/; will retry", "id", m.ID, "error", err.Error())
		q.store.writeMeta(m) // keeps Bounced, so the sender is not told twice
		q.setMeta(it, m)
		return now.Add(time.Minute), true
	}
	q.mu.Lock()
	delete(q.items, m.ID)
	q.failed[m.ID] = m
	q.mu.Unlock()
	return time.Time{}, false
}

func (q *Queue) forget(id string) {
	q.mu.Lock()
	delete(q.items, id)
	q.mu.Unlock()
}

// pruneFailed removes failed/ messages past retention; caller holds q.mu
// (or is Open).
func (q *Queue) pruneFailed() {
	cut := q.now().Add(-q.opts.FailedRetention)
	for id, m := range q.failed {
		if !m.Finished.IsZero() && m.Finished.Before(cut) {
			if err := q.store.removeFailed(id); err == nil {
				delete(q.failed, id)
				q.log.Info("queue: pruned failed message past retention", "id", id)
			}
		}
	}
}

// SetAccountConcurrency changes how many deliveries of account run at once
// (the relay lowers it when Microsoft throttles); n <= 0 restores the default.
func (q *Queue) SetAccountConcurrency(account string, n int) {
	q.mu.Lock()
	if n <= 0 {
		delete(q.limits, account)
	} else {
		q.limits[account] = n
	}
	q.mu.Unlock()
	q.poke()
}

// Close stops handing out work and waits for deliveries in flight until ctx
// is done; then it cancels them and waits for them to return. Every message
// is left in a state the next Open resumes.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return nil
	}
	q.closing = true
	q.mu.Unlock()
	close(q.done)
	q.loop.Wait()
	idle := make(chan struct{})
	go func() { q.wg.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-ctx.Done():
		q.cancel()
		<-idle
	}
	q.cancel()
	q.store.close()
	return nil
}
