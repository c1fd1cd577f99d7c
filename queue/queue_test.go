package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// recorder is a fake Deliverer: behave decides each attempt's result; every
// delivered message's bytes are kept.
type recorder struct {
	mu        sync.Mutex
	behave    func(d *Delivery) Result
	delivered map[string][]byte
	attempts  map[string][]time.Time
	ch        chan string // receives the ID of every finished attempt
}

func newRecorder(behave func(d *Delivery) Result) *recorder {
	return &recorder{behave: behave, delivered: map[string][]byte{}, attempts: map[string][]time.Time{}, ch: make(chan string, 10000)}
}

func deliverAll(d *Delivery) Result {
	var res Result
	for _, to := range d.To {
		res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: Delivered, Reply: Reply{Code: 250, Enhanced: "2.0.0", Text: "OK"}})
	}
	return res
}

func allWith(d *Delivery, o Outcome, r Reply) Result {
	var res Result
	for _, to := range d.To {
		res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: o, Reply: r})
	}
	return res
}

var (
	tempReply = Reply{Code: 451, Enhanced: "4.7.500", Text: "Server busy"}
	permReply = Reply{Code: 554, Enhanced: "5.2.252", Text: "SendAsDenied"}
)

func (r *recorder) Deliver(ctx context.Context, d *Delivery) Result {
	behave := deliverAll
	r.mu.Lock()
	if r.behave != nil {
		behave = r.behave
	}
	r.attempts[d.ID] = append(r.attempts[d.ID], time.Now())
	r.mu.Unlock()
	res := behave(d)
	delivered := false
	for _, rr := range res.Recipients {
		delivered = delivered || rr.Outcome == Delivered
	}
	if delivered {
		body, err := d.Open()
		if err != nil {
			panic(err)
		}
		b, _ := io.ReadAll(body)
		body.Close()
		r.mu.Lock()
		r.delivered[d.ID] = b
		r.mu.Unlock()
	}
	r.ch <- d.ID
	return res
}

func (r *recorder) setBehave(f func(d *Delivery) Result) {
	r.mu.Lock()
	r.behave = f
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.delivered)
}

// waitFor polls cond until it holds or 10 s pass; it is used only where no
// channel can say "done" (state on disk).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fastRetry() RetryPolicy {
	return RetryPolicy{Delays: []time.Duration{50 * time.Millisecond}, MaxAge: time.Hour}
}

func open(t *testing.T, dir string, d Deliverer, mod func(*Options)) *Queue {
	t.Helper()
	opts := Options{Dir: dir, Deliverer: d, Retry: fastRetry(), Workers: 8}
	if mod != nil {
		mod(&opts)
	}
	q, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	return q
}

func env(from string, to ...string) Envelope {
	return Envelope{From: from, To: to, Account: "helpdesk"}
}

func enqueue(t *testing.T, q *Queue, e Envelope, body string) string {
	t.Helper()
	id, err := q.Enqueue(context.Background(), e, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// onDisk reads the spool's log as recovery would and returns the live
// messages' latest state, without changing anything.
func onDisk(t *testing.T, dir string) map[string]*Meta {
	t.Helper()
	live, err := inspectLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*Meta{}
	for id, sc := range live {
		out[id] = sc.meta
	}
	return out
}

// spoolEmpty: no live message in the log and no body in msg/.
func spoolEmpty(t *testing.T, dir string) bool {
	return len(onDisk(t, dir)) == 0 && len(files(t, filepath.Join(dir, dirMsg))) == 0
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestQueue_EnqueueIsAttemptedAtOnce(t *testing.T) {
	rec := newRecorder(nil)
	q := open(t, t.TempDir(), rec, func(o *Options) {
		o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour}
	})
	id := enqueue(t, q, env("a@contoso.com", "b@example.com"), "Subject: x\r\n\r\nhello\r\n")
	select {
	case got := <-rec.ch:
		if got != id {
			t.Fatalf("attempted %s, want %s", got, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a new message must be attempted at once, not at the next retry tick")
	}
	waitFor(t, "delivered message removed, meta and body", func() bool {
		return spoolEmpty(t, q.opts.Dir)
	})
	if string(rec.delivered[id]) != "Subject: x\r\n\r\nhello\r\n" {
		t.Errorf("body changed: %q", rec.delivered[id])
	}
}

// TestQueue_CrashAtEveryWriteStep cuts Enqueue at every step (the goroutine
// stops dead there, as a crash would: no cleanup runs), reopens the spool and
// checks the message is either fully queued and then delivered, or absent —
// never half — and that nothing is left over. It runs for a body stored in
// the log and for one streamed into msg/.
func TestQueue_CrashAtEveryWriteStep(t *testing.T) {
	// From the record write on, the message is there after a restart (it
	// had not been acknowledged yet at record-written, and may be delivered).
	committed := map[string]bool{stepRecordWritten: true, stepRecordSynced: true}
	body := "Subject: crash\r\n\r\n" + strings.Repeat("x", 100000) + "\r\n"
	for _, tc := range []struct {
		name      string
		inlineMax int
		steps     []string
	}{
		{"inline", 0, []string{stepRecordWritten, stepRecordSynced}},
		{"file", 1024, []string{stepBodyWritten, stepBodyStored, stepRecordWritten, stepRecordSynced}},
	} {
		for _, step := range tc.steps {
			t.Run(tc.name+"/"+step, func(t *testing.T) {
				dir := t.TempDir()
				blocked := newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "test: hold"} })
				q1, err := Open(Options{Dir: dir, Deliverer: blocked, Retry: fastRetry(), InlineMax: tc.inlineMax, stepHook: func(s string) {
					if s == step {
						runtime.Goexit() // the process dies here
					}
				}})
				if err != nil {
					t.Fatal(err)
				}
				q1.Pause("helpdesk", "hold")
				done := make(chan struct{})
				go func() {
					defer close(done)
					q1.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), strings.NewReader(body))
					t.Errorf("Enqueue returned although the step hook stopped it")
				}()
				<-done
				q1.Close(context.Background())

				rec := newRecorder(nil)
				q2 := open(t, dir, rec, func(o *Options) { o.InlineMax = tc.inlineMax })
				if committed[step] {
					select {
					case <-rec.ch:
					case <-time.After(5 * time.Second):
						t.Fatal("a committed message must be delivered after restart")
					}
					for _, b := range rec.delivered {
						if string(b) != body {
							t.Fatal("delivered body differs from what was accepted")
						}
					}
					waitFor(t, "delivered", func() bool { return spoolEmpty(t, dir) })
				} else {
					if n := len(q2.List(Filter{})); n != 0 {
						t.Fatalf("uncommitted message appeared after restart: %d", n)
					}
				}
				for _, sub := range []string{dirTmp, dirMsg, dirCorrupt, dirFailed} {
					if left := files(t, filepath.Join(dir, sub)); len(left) != 0 {
						t.Errorf("%s/ not clean after restart: %v", sub, left)
					}
				}
			})
		}
	}
}

// TestStore_TornLogTail: a crash in the middle of appending leaves a partial
// record (or garbage) at the end of the last segment. It was never
// acknowledged; recovery cuts it off and everything before it survives, and
// later appends are readable after another restart.
func TestStore_TornLogTail(t *testing.T) {
	for _, tail := range []struct {
		name string
		junk func(rec []byte) []byte
		// damage: not an interrupted append (the record is all there but
		// wrong), so a copy goes to corrupt/ and an error is logged.
		damage bool
	}{
		{"half a record", func(rec []byte) []byte { return rec[:len(rec)/2] }, false},
		{"header only", func(rec []byte) []byte { return rec[:recHeader-3] }, false},
		{"zeros", func([]byte) []byte { return make([]byte, 4096) }, false},
		{"bad checksum", func(rec []byte) []byte { r := bytes.Clone(rec); r[len(r)-1] ^= 0xff; return r }, true},
	} {
		t.Run(tail.name, func(t *testing.T) {
			dir := t.TempDir()
			hold := func(o *Options) {}
			q1 := open(t, dir, newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} }), hold)
			q1.Pause("helpdesk", "hold")
			kept := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "kept")
			q1.Close(context.Background())
			seqs, _ := (&store{dir: dir}).segments()
			last := (&store{dir: dir}).segPath(seqs[len(seqs)-1])
			m := &Meta{Version: MetaVersion, ID: newID(time.Now()), From: "a@contoso.com", Account: "helpdesk", Arrived: time.Now(),
				Recipients: []Recipient{{Addr: "torn@example.com", State: StateQueued}}}
			mb, _ := json.Marshal(m)
			f, _ := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(tail.junk(sealedFor(t, last, newRecord(mb, []byte("torn")))))
			f.Close()
			sizeBefore := fileSize(t, last)

			var logs bytes.Buffer
			rec := newRecorder(nil)
			q2 := open(t, dir, rec, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			if fileSize(t, last) >= sizeBefore {
				t.Error("torn tail not cut off")
			}
			if want := "unacknowledged partial record"; tail.damage {
				if !strings.Contains(logs.String(), "damaged log segment") {
					t.Errorf("damage not logged: %s", logs.String())
				}
			} else if !strings.Contains(logs.String(), want) {
				t.Errorf("cut not logged: %s", logs.String())
			}
			waitFor(t, "the kept message delivered", func() bool { return rec.count() == 1 })
			if string(rec.delivered[kept]) != "kept" {
				t.Fatalf("delivered %v", rec.delivered)
			}
			after := enqueue(t, q2, env("a@contoso.com", "c@example.com"), "after")
			waitFor(t, "delivered", func() bool { return rec.count() == 2 })
			q2.Close(context.Background())
			if string(rec.delivered[after]) != "after" {
				t.Fatal("message after the cut not delivered intact")
			}
			if n := len(files(t, filepath.Join(dir, dirCorrupt))); !tail.damage && n != 0 {
				t.Errorf("a torn tail is not damage: corrupt/ has %d files", n)
			} else if tail.damage && n != 1 {
				t.Errorf("damage not copied to corrupt/: %d files", n)
			}
			if live := onDisk(t, dir); len(live) != 0 {
				t.Errorf("log still says live: %v", live)
			}
		})
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// TestQueue_RecoversInterruptedMoves builds the on-disk states a crash can
// leave in moveToFailed and requeue, and checks Open finishes them.
func TestQueue_RecoversInterruptedMoves(t *testing.T) {
	mk := func(t *testing.T, state RcptState) (string, *Meta) {
		dir := t.TempDir()
		st, _ := openStore(dir, nil, slog.New(slog.DiscardHandler))
		if _, _, err := st.recoverSpool(); err != nil {
			t.Fatal(err)
		}
		defer st.close()
		now := time.Now()
		m := &Meta{Version: MetaVersion, ID: newID(now), From: "a@b.c", Account: "x", Arrived: now, AgeFrom: now,
			Recipients: []Recipient{{Addr: "r@x.y", State: state}}}
		if state == StateFailed {
			m.Recipients[0].Last = &permReply
		}
		if _, err := st.enqueue(m.ID, strings.NewReader("body"), func(int64) *Meta { return m }); err != nil {
			t.Fatal(err)
		}
		return dir, m
	}
	t.Run("failed json written, live record not yet removed", func(t *testing.T) {
		dir, m := mk(t, StateFailed)
		os.WriteFile(filepath.Join(dir, dirFailed, m.ID+".eml"), []byte("body"), 0o600)
		m.Finished = time.Now()
		b, _ := json.Marshal(m)
		os.WriteFile(filepath.Join(dir, dirFailed, m.ID+".json"), b, 0o600)
		q := open(t, dir, newRecorder(nil), nil)
		if msg, err := q.Get(m.ID); err != nil || msg.State != MsgFailed {
			t.Fatalf("want failed, got %+v %v", msg, err)
		}
		if !spoolEmpty(t, dir) {
			t.Error("live copy left behind")
		}
	})
	t.Run("record of a msg/ body that is gone", func(t *testing.T) {
		dir := t.TempDir()
		q1 := open(t, dir, newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} }), func(o *Options) { o.InlineMax = 2 })
		q1.Pause("helpdesk", "hold")
		id := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "a body in msg/")
		q1.Close(context.Background())
		os.Remove(filepath.Join(dir, dirMsg, id+".eml")) // damage, not a crash: the body is durable before its record
		var logs bytes.Buffer
		q := open(t, dir, newRecorder(nil), func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
		if n := len(q.List(Filter{})); n != 0 {
			t.Fatalf("a message without its body is listed: %d", n)
		}
		if got := files(t, filepath.Join(dir, dirCorrupt)); len(got) != 1 || got[0] != id+".json" {
			t.Errorf("corrupt/ holds %v, want the meta kept for inspection", got)
		}
		if !strings.Contains(logs.String(), id) {
			t.Errorf("not logged: %s", logs.String())
		}
		if !spoolEmpty(t, dir) {
			t.Error("log still names the message")
		}
	})
	t.Run("failed body written, json not written", func(t *testing.T) {
		// The crash came before the move finished: the message is live with
		// a recipient still pending.
		dir, m := mk(t, StateDeferred)
		os.WriteFile(filepath.Join(dir, dirFailed, m.ID+".eml"), []byte("body"), 0o600)
		rec := newRecorder(func(d *Delivery) Result { return allWith(d, Deferred, tempReply) })
		q := open(t, dir, rec, nil)
		if msg, err := q.Get(m.ID); err != nil || msg.State == MsgFailed {
			t.Fatalf("want live, got %+v %v", msg, err)
		}
		if len(files(t, filepath.Join(dir, dirFailed))) != 0 {
			t.Error("stray failed/ body left")
		}
	})
	t.Run("requeue committed, failed copy not yet removed", func(t *testing.T) {
		dir, m := mk(t, StateFailed)
		q1 := open(t, dir, newRecorder(nil), nil) // finishes m into failed/
		waitFor(t, "moved to failed/", func() bool {
			_, err := q1.Get(m.ID)
			return err == nil && len(files(t, filepath.Join(dir, dirFailed))) == 2
		})
		q1.Close(context.Background())
		st, _ := openStore(dir, nil, slog.New(slog.DiscardHandler))
		if _, _, err := st.recoverSpool(); err != nil {
			t.Fatal(err)
		}
		n := m.clone()
		n.ID, n.RequeuedFrom = newID(time.Now().Add(time.Millisecond)), m.ID
		n.Recipients[0].State = StateQueued
		os.Link(filepath.Join(dir, dirFailed, m.ID+".eml"), filepath.Join(dir, dirMsg, n.ID+".eml"))
		if err := st.commitMeta(n); err != nil {
			t.Fatal(err)
		}
		st.close()
		rec := newRecorder(nil)
		q := open(t, dir, rec, nil)
		if _, err := q.Get(m.ID); !errors.Is(err, ErrNotFound) {
			t.Error("stale failed/ copy kept after requeue")
		}
		<-rec.ch
		if string(rec.delivered[n.ID]) != "body" {
			t.Error("requeued message not delivered")
		}
	})
}

// TestQueue_RestartDeliversEverything fills a queue with messages in every
// state, closes it, reopens it and sees each one delivered as scheduled.
func TestQueue_RestartDeliversEverything(t *testing.T) {
	dir := t.TempDir()
	retry := RetryPolicy{Delays: []time.Duration{400 * time.Millisecond}, MaxAge: time.Hour}
	rec1 := newRecorder(func(d *Delivery) Result {
		switch {
		case strings.HasPrefix(d.To[0], "perm"):
			return allWith(d, Failed, permReply)
		case strings.HasPrefix(d.To[0], "ok"):
			return deliverAll(d)
		default:
			return allWith(d, Deferred, tempReply)
		}
	})
	q1 := open(t, dir, rec1, func(o *Options) { o.Retry = retry })
	var deferred, ok, paused []string
	for i := range 20 {
		deferred = append(deferred, enqueue(t, q1, env("a@contoso.com", "later@example.com"), "d"))
		ok = append(ok, enqueue(t, q1, env("a@contoso.com", "ok@example.com"), "o"))
		_ = i
	}
	perm := enqueue(t, q1, env("a@contoso.com", "perm@example.com"), "p")
	q1.Pause("other", "test")
	for range 5 {
		paused = append(paused, enqueue(t, q1, Envelope{From: "a@contoso.com", To: []string{"p@example.com"}, Account: "other"}, "x"))
	}
	waitFor(t, "first attempts", func() bool { return rec1.count() == 20 && len(q1.List(Filter{State: MsgDeferred})) == 20 })
	q1.Close(context.Background())

	before := map[string]time.Time{}
	disk := onDisk(t, dir)
	for _, id := range deferred {
		m := disk[id]
		if m == nil || m.Attempts != 1 {
			t.Fatalf("deferred %s: %+v", id, m)
		}
		before[id] = m.NextAttempt
	}

	rec2 := newRecorder(nil)
	q2 := open(t, dir, rec2, func(o *Options) { o.Retry = retry })
	waitFor(t, "all delivered after restart", func() bool { return rec2.count() == len(deferred)+len(paused) })
	for _, id := range deferred {
		at := rec2.attempts[id][0]
		if at.Before(before[id]) {
			t.Errorf("%s attempted at %v, before its scheduled %v", id, at, before[id])
		}
	}
	for _, id := range ok {
		if _, again := rec2.delivered[id]; again {
			t.Errorf("%s delivered twice", id)
		}
	}
	if msg, err := q2.Get(perm); err != nil || msg.State != MsgFailed {
		t.Errorf("permanent failure should stay in failed/: %+v %v", msg, err)
	}
}

func TestRetryPolicy_Table(t *testing.T) {
	p := DefaultRetry()
	want := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 4 * time.Hour, 4 * time.Hour}
	for i, w := range want {
		lo, hi := time.Duration(float64(w)*0.9), time.Duration(float64(w)*1.1)
		for _, r := range []float64{0, 0.25, 0.5, 0.999999} {
			got := p.Delay(i+1, func() float64 { return r })
			if got < lo || got > hi {
				t.Errorf("attempt %d, rnd %.2f: %v outside [%v, %v]", i+1, r, got, lo, hi)
			}
		}
		if got := p.Delay(i+1, func() float64 { return 0.5 }); got != w {
			t.Errorf("attempt %d without jitter: %v, want %v", i+1, got, w)
		}
	}
	if p.MaxAge != 120*time.Hour {
		t.Errorf("max age %v, want 5 days", p.MaxAge)
	}
	spread := map[time.Duration]bool{}
	for range 50 {
		spread[p.Delay(1, nil)] = true
	}
	if len(spread) < 10 {
		t.Error("jitter does not spread delays")
	}
}

func TestQueue_MaxAgeFailsWith447AndBounces(t *testing.T) {
	var bounces []*Bounce
	var mu sync.Mutex
	rec := newRecorder(func(d *Delivery) Result { return allWith(d, Deferred, tempReply) })
	q := open(t, t.TempDir(), rec, func(o *Options) {
		o.Retry = RetryPolicy{Delays: []time.Duration{30 * time.Millisecond}, MaxAge: 300 * time.Millisecond}
		o.Bounce = func(_ context.Context, b *Bounce) error {
			mu.Lock()
			bounces = append(bounces, b)
			mu.Unlock()
			return nil
		}
	})
	id := enqueue(t, q, env("a@contoso.com", "b@example.com", "c@example.com"), "x")
	waitFor(t, "expiry", func() bool { m, _ := q.Get(id); return m.State == MsgFailed })
	mu.Lock()
	defer mu.Unlock()
	if len(bounces) != 1 || len(bounces[0].Failed) != 2 {
		t.Fatalf("want one bounce for both recipients, got %d", len(bounces))
	}
	last := bounces[0].Failed[0].Last
	if last.Enhanced != "4.4.7" || !strings.Contains(last.Text, "last reply: 451 4.7.500") {
		t.Errorf("expiry reply %+v", last)
	}
	if n := len(rec.attempts[id]); n < 3 {
		t.Errorf("only %d attempts before expiry", n)
	}
}

func TestQueue_PerAccountConcurrencyLimit(t *testing.T) {
	var mu sync.Mutex
	cur, peak := map[string]int{}, map[string]int{}
	release := make(chan struct{})
	rec := newRecorder(func(d *Delivery) Result {
		mu.Lock()
		cur[d.Account]++
		peak[d.Account] = max(peak[d.Account], cur[d.Account])
		mu.Unlock()
		<-release
		mu.Lock()
		cur[d.Account]--
		mu.Unlock()
		return deliverAll(d)
	})
	q := open(t, t.TempDir(), rec, func(o *Options) { o.Workers = 16; o.AccountConcurrency = 2 })
	for i := range 20 {
		acct := []string{"a", "b"}[i%2]
		if _, err := q.Enqueue(context.Background(), Envelope{From: "x@y.z", To: []string{"r@x.y"}, Account: acct}, strings.NewReader("m")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both accounts at their limit", func() bool { mu.Lock(); defer mu.Unlock(); return cur["a"] == 2 && cur["b"] == 2 })
	close(release)
	waitFor(t, "all delivered", func() bool { return rec.count() == 20 })
	if peak["a"] != 2 || peak["b"] != 2 {
		t.Errorf("peak concurrency %v, want 2 per account", peak)
	}
}

func TestQueue_PauseUsesNoAttemptAndResumeDeliversAtOnce(t *testing.T) {
	var bounced atomic.Int32
	rec := newRecorder(func(d *Delivery) Result {
		return Result{PauseAccount: "AADSTS70008: refresh token expired — reconnect"}
	})
	q := open(t, t.TempDir(), rec, func(o *Options) {
		o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour}
		o.Bounce = func(context.Context, *Bounce) error { bounced.Add(1); return nil }
	})
	first := enqueue(t, q, env("a@contoso.com", "b@example.com"), "1")
	<-rec.ch
	waitFor(t, "pause", func() bool { _, p := q.Paused("helpdesk"); return p })
	second := enqueue(t, q, env("a@contoso.com", "b@example.com"), "2")
	for _, id := range []string{first, second} {
		waitFor(t, "paused state", func() bool { m, _ := q.Get(id); return m.State == MsgPaused })
		m, _ := q.Get(id)
		if m.Attempts != 0 || m.PausedReason == "" {
			t.Errorf("%s: attempts %d (a pause must not use one), reason %q", id, m.Attempts, m.PausedReason)
		}
	}
	select {
	case <-rec.ch:
		t.Fatal("a paused account's message was attempted")
	case <-time.After(100 * time.Millisecond):
	}
	rec.setBehave(deliverAll)
	q.Resume("helpdesk")
	waitFor(t, "delivery after resume", func() bool { return rec.count() == 2 })
	if bounced.Load() != 0 {
		t.Error("a pause must not bounce")
	}
}

func TestQueue_PausedTooLongExpiresSayingReconnect(t *testing.T) {
	var got *Bounce
	var mu sync.Mutex
	rec := newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "refresh token revoked"} })
	q := open(t, t.TempDir(), rec, func(o *Options) {
		o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 300 * time.Millisecond}
		o.Bounce = func(_ context.Context, b *Bounce) error { mu.Lock(); got = b; mu.Unlock(); return nil }
	})
	id := enqueue(t, q, env("a@contoso.com", "b@example.com"), "x")
	waitFor(t, "expiry while paused", func() bool { m, _ := q.Get(id); return m.State == MsgFailed })
	mu.Lock()
	defer mu.Unlock()
	if got == nil || !strings.Contains(got.Failed[0].Last.Text, "needed reconnecting: refresh token revoked") {
		t.Fatalf("bounce should say the account needed reconnecting: %+v", got)
	}
}

func TestQueue_NoBounceForNullSenderOrBounce(t *testing.T) {
	var bounced atomic.Int32
	rec := newRecorder(func(d *Delivery) Result { return allWith(d, Failed, permReply) })
	q := open(t, t.TempDir(), rec, func(o *Options) {
		o.Bounce = func(context.Context, *Bounce) error { bounced.Add(1); return nil }
	})
	null := enqueue(t, q, env("", "b@example.com"), "x")
	dsn := enqueue(t, q, Envelope{From: "relay@contoso.com", To: []string{"a@contoso.com"}, Account: "helpdesk", IsBounce: true}, "y")
	normal := enqueue(t, q, env("a@contoso.com", "b@example.com"), "z")
	for _, id := range []string{null, dsn, normal} {
		waitFor(t, "failed", func() bool { m, _ := q.Get(id); return m.State == MsgFailed })
	}
	if bounced.Load() != 1 {
		t.Fatalf("bounces = %d, want 1 (only the normal sender)", bounced.Load())
	}
	if m, _ := q.Get(normal); !m.Bounced {
		t.Error("Bounced not recorded")
	}
}

func TestQueue_MixedOutcomesOneBounceForAllFailed(t *testing.T) {
	var bounces []*Bounce
	var mu sync.Mutex
	rec := newRecorder(func(d *Delivery) Result {
		var res Result
		for _, to := range d.To {
			switch {
			case strings.HasPrefix(to, "bad"):
				res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: Failed, Reply: permReply})
			case strings.HasPrefix(to, "slow") && d.Attempt == 1:
				res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: Deferred, Reply: tempReply})
			default:
				res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: Delivered, Reply: Reply{Code: 250}})
			}
		}
		return res
	})
	q := open(t, t.TempDir(), rec, func(o *Options) {
		o.Bounce = func(_ context.Context, b *Bounce) error {
			mu.Lock()
			bounces = append(bounces, b)
			mu.Unlock()
			return nil
		}
	})
	id := enqueue(t, q, env("a@contoso.com", "ok@x.y", "bad1@x.y", "slow@x.y", "bad2@x.y"), "m")
	waitFor(t, "finished", func() bool { m, _ := q.Get(id); return m.State == MsgFailed })
	m, _ := q.Get(id)
	states := map[string]RcptState{}
	for _, r := range m.Recipients {
		states[r.Addr] = r.State
	}
	if states["ok@x.y"] != StateDelivered || states["slow@x.y"] != StateDelivered || states["bad1@x.y"] != StateFailed {
		t.Errorf("states %v", states)
	}
	if n := len(rec.attempts[id]); n != 2 {
		t.Errorf("attempts %d, want 2 (second only for the deferred recipient)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bounces) != 1 || len(bounces[0].Failed) != 2 {
		t.Fatalf("want one bounce covering both failed recipients, got %+v", bounces)
	}
}

func TestQueue_AttemptRecordedBeforeDelivery(t *testing.T) {
	dir := t.TempDir()
	seen := make(chan *Meta, 1)
	rec := newRecorder(func(d *Delivery) Result {
		seen <- onDisk(t, dir)[d.ID]
		return deliverAll(d)
	})
	q := open(t, dir, rec, func(o *Options) { o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour} })
	enqueue(t, q, env("a@contoso.com", "b@example.com"), "x")
	m := <-seen
	if m.Attempts != 1 || m.Recipients[0].State != StateInflight || time.Until(m.NextAttempt) < 50*time.Minute {
		t.Fatalf("on disk during delivery: attempts %d, state %s, next %v — a crash now would retry in a loop", m.Attempts, m.Recipients[0].State, m.NextAttempt)
	}
}

// TestQueue_CorruptMetaQuarantined: a record whose checksum holds but whose
// meta cannot be parsed (a bug, or a format from a newer build) is copied
// to corrupt/ and logged; the other messages are unharmed.
func TestQueue_CorruptMetaQuarantined(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	q1 := open(t, dir, newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} }), nil)
	q1.Pause("helpdesk", "hold")
	good := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "good")
	q1.Close(context.Background())
	seqs, _ := (&store{dir: dir}).segments()
	last := (&store{dir: dir}).segPath(seqs[len(seqs)-1])
	f, _ := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(sealedFor(t, last, newRecord([]byte(`{"version":99,"id":"ffffffffffffffffffff"}`), []byte("x"))))
	f.Close()
	rec := newRecorder(nil)
	q2 := open(t, dir, rec, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	// Delivered and then removed from the queue (the recorder hears of it
	// a moment before the queue has finished with it).
	waitFor(t, "good one delivered", func() bool { return rec.count() == 1 && len(q2.List(Filter{})) == 0 })
	if _, ok := rec.delivered[good]; !ok || len(q2.List(Filter{})) != 0 {
		t.Fatalf("delivered %v, listed %v", rec.delivered, q2.List(Filter{}))
	}
	got := files(t, filepath.Join(dir, dirCorrupt))
	if len(got) != 1 || !strings.HasSuffix(got[0], ".record") {
		t.Fatalf("corrupt/ holds %v, want the record", got)
	}
	if !strings.Contains(logs.String(), "quarantined") || !strings.Contains(logs.String(), "version 99") {
		t.Errorf("quarantine not logged: %s", logs.String())
	}
}

// TestStore_DamagedClosedSegment: a closed segment was fdatasynced whole, so
// a bad record in it is disk damage. The records before it are read, a copy
// of the segment is kept in corrupt/, and later segments are read as usual.
func TestStore_DamagedClosedSegment(t *testing.T) {
	dir := t.TempDir()
	hold := newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} })
	q1 := open(t, dir, hold, nil)
	q1.Pause("helpdesk", "hold")
	before := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "before")
	damaged := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "damaged")
	q1.Close(context.Background())
	q2 := open(t, dir, hold, nil) // a new segment: the first one is closed now
	q2.Pause("helpdesk", "hold")
	later := enqueue(t, q2, env("a@contoso.com", "b@example.com"), "later")
	q2.Close(context.Background())

	seqs, _ := (&store{dir: dir}).segments()
	first := (&store{dir: dir}).segPath(seqs[0])
	b, _ := os.ReadFile(first)
	i := bytes.LastIndex(b, []byte("damaged"))
	b[i] ^= 0xff
	os.WriteFile(first, b, 0o600)

	var logs bytes.Buffer
	rec := newRecorder(nil)
	open(t, dir, rec, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	waitFor(t, "the readable messages delivered", func() bool { return rec.count() == 2 })
	if string(rec.delivered[before]) != "before" || string(rec.delivered[later]) != "later" {
		t.Fatalf("delivered %v", rec.delivered)
	}
	if _, ok := rec.delivered[damaged]; ok {
		t.Fatal("a damaged record was delivered")
	}
	// If q2 recorded an attempt for the damaged message, that record
	// (in the second segment) survives without its body: its meta is kept
	// in corrupt/ too.
	got := files(t, filepath.Join(dir, dirCorrupt))
	if !slices.Contains(got, filepath.Base(first)) || len(got) > 2 || len(got) == 2 && !slices.Contains(got, damaged+".json") {
		t.Fatalf("corrupt/ holds %v, want a copy of the segment", got)
	}
	if !strings.Contains(logs.String(), "damaged log segment") {
		t.Errorf("not logged: %s", logs.String())
	}
}

func TestQueue_DiskTroubleFailsEnqueueOnly(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder(func(d *Delivery) Result { return allWith(d, Deferred, tempReply) })
	q := open(t, dir, rec, func(o *Options) { o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour} })
	kept := enqueue(t, q, env("a@contoso.com", "b@example.com"), "keep me")
	<-rec.ch
	// A failing disk: the log append writes half its record and fails.
	// (A full disk is TestQueue_FullDisk.)
	q.store.mu.Lock()
	q.store.writeFault = func() error { return syscall.EIO }
	q.store.mu.Unlock()
	_, err := q.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), strings.NewReader("lost?"))
	if !errors.Is(err, ErrDiskTrouble) {
		t.Fatalf("want ErrDiskTrouble, got %v", err)
	}
	// A large body: tmp/ unusable (a file where the folder should be;
	// permissions do not stop root).
	tmp := filepath.Join(dir, dirTmp)
	os.RemoveAll(tmp)
	os.WriteFile(tmp, nil, 0o600)
	_, err = q.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), bytes.NewReader(make([]byte, 300<<10)))
	if !errors.Is(err, ErrDiskTrouble) {
		t.Fatalf("want ErrDiskTrouble for a large body, got %v", err)
	}
	os.Remove(tmp)
	os.Mkdir(tmp, 0o700)
	q.store.mu.Lock()
	q.store.writeFault = nil
	q.store.mu.Unlock()
	next := enqueue(t, q, env("a@contoso.com", "c@example.com"), "after the disk recovered")
	if _, err := q.Get(kept); err != nil {
		t.Fatal("queued message harmed by a failed enqueue")
	}
	body, _ := q.OpenBody(kept)
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "keep me" {
		t.Errorf("body now %q", b)
	}
	q.Close(context.Background())
	// After a restart both good messages are there, the failed one is not.
	q2 := open(t, dir, newRecorder(nil), nil)
	if got := q2.List(Filter{}); len(got) != 2 {
		t.Fatalf("after restart %d messages, want the 2 acknowledged", len(got))
	}
	if left := files(t, filepath.Join(dir, dirCorrupt)); len(left) != 0 {
		t.Errorf("corrupt/ after a failed append: %v", left)
	}
	_ = next
}

func TestQueue_ClientReadErrorIsNotDiskTrouble(t *testing.T) {
	q := open(t, t.TempDir(), newRecorder(nil), nil)
	_, err := q.Enqueue(context.Background(), env("a@b.c", "d@e.f"), io.MultiReader(strings.NewReader("part"), iotestErr{}))
	if err == nil || errors.Is(err, ErrDiskTrouble) {
		t.Fatalf("a broken client stream must fail without blaming the disk: %v", err)
	}
	if left := files(t, filepath.Join(q.opts.Dir, dirTmp)); len(left) != 0 {
		t.Errorf("partial write left in tmp/: %v", left)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestQueue_Operations(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	rec := newRecorder(func(d *Delivery) Result {
		if strings.HasPrefix(d.To[0], "perm") && fail.Load() {
			return allWith(d, Failed, permReply)
		}
		if strings.HasPrefix(d.To[0], "later") {
			return allWith(d, Deferred, tempReply)
		}
		return deliverAll(d)
	})
	q := open(t, t.TempDir(), rec, func(o *Options) { o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour} })
	later := enqueue(t, q, env("a@contoso.com", "later@x.y"), "l")
	perm := enqueue(t, q, env("a@contoso.com", "perm@x.y"), "p")
	other := enqueue(t, q, Envelope{From: "a@contoso.com", To: []string{"later@x.y"}, Account: "scanners"}, "o")
	waitFor(t, "settled", func() bool {
		m1, _ := q.Get(later)
		m2, _ := q.Get(perm)
		m3, _ := q.Get(other)
		return m1.State == MsgDeferred && m2.State == MsgFailed && m3.State == MsgDeferred
	})

	if got := q.List(Filter{State: MsgDeferred, Account: "helpdesk"}); len(got) != 1 || got[0].ID != later {
		t.Errorf("list filter: %+v", got)
	}
	m, err := q.Get(later)
	if err != nil || m.Recipients[0].Last == nil || m.Recipients[0].Last.Code != 451 {
		t.Errorf("get: last reply missing: %+v", m)
	}
	st := q.Stats()
	if st.Messages != 3 || st.ByState[MsgDeferred] != 2 || st.ByAccount["scanners"][MsgDeferred] != 1 || st.Bytes != 3 || st.Oldest.IsZero() {
		t.Errorf("stats %+v", st)
	}

	// Retry now: attempted again at once, not in an hour.
	before := len(rec.attempts[later])
	if err := q.RetryNow(later); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "retry now", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.attempts[later]) > before })
	if err := q.RetryNow("00000000000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("retry unknown: %v", err)
	}

	// Requeue from failed/: delivered this time, under a new ID.
	fail.Store(false)
	nid, err := q.Requeue(perm)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "requeued delivered", func() bool { return rec.count() >= 1 })
	if _, err := q.Get(perm); !errors.Is(err, ErrNotFound) {
		t.Error("old failed entry still there after requeue")
	}
	if string(rec.delivered[nid]) != "p" {
		t.Errorf("requeued body %q", rec.delivered[nid])
	}

	// Delete and flush.
	waitFor(t, "not in flight", func() bool { m, _ := q.Get(later); return m.State == MsgDeferred })
	if err := q.Delete(later); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(later); !errors.Is(err, ErrNotFound) {
		t.Error("deleted message still listed")
	}
	if err := q.Delete(later); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	before = len(rec.attempts[other])
	if n := q.Flush().Scheduled; n != 1 {
		t.Errorf("flush saw %d messages, want 1", n)
	}
	waitFor(t, "flush", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.attempts[other]) > before })
}

func TestQueue_FailedPrunedAfterRetention(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder(func(d *Delivery) Result { return allWith(d, Failed, permReply) })
	q1 := open(t, dir, rec, nil)
	id := enqueue(t, q1, env("", "b@example.com"), "x")
	waitFor(t, "failed", func() bool { m, _ := q1.Get(id); return m.State == MsgFailed })
	q1.Close(context.Background())
	q2 := open(t, dir, rec, func(o *Options) { o.Now = func() time.Time { return time.Now().Add(8 * 24 * time.Hour) } })
	if _, err := q2.Get(id); !errors.Is(err, ErrNotFound) {
		t.Error("failed message older than retention kept")
	}
	if left := files(t, filepath.Join(dir, dirFailed)); len(left) != 0 {
		t.Errorf("failed/ not pruned: %v", left)
	}
}

func TestQueue_CloseWaitsThenCancels(t *testing.T) {
	dir := t.TempDir()
	started := make(chan struct{})
	rec := newRecorder(func(d *Delivery) Result {
		close(started)
		time.Sleep(50 * time.Millisecond)
		return deliverAll(d)
	})
	q, _ := Open(Options{Dir: dir, Deliverer: rec, Retry: fastRetry()})
	id := enqueue(t, q, env("a@b.c", "d@e.f"), "x")
	<-started
	q.Close(context.Background())
	if _, ok := rec.delivered[id]; !ok {
		t.Error("Close did not wait for the delivery in flight")
	}
	if _, err := q.Enqueue(context.Background(), env("a@b.c", "d@e.f"), strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("enqueue after close: %v", err)
	}

	// A delivery that outlives the deadline is cancelled and its message
	// stays for the next Open.
	dir2 := t.TempDir()
	hang := newRecorder(func(d *Delivery) Result { return Result{} })
	hang.behave = nil
	block := DelivererFunc(func(ctx context.Context, d *Delivery) Result {
		<-ctx.Done()
		return allWith(d, Deferred, Reply{Code: 421, Enhanced: "4.4.2", Text: "relay shutting down"})
	})
	q2, _ := Open(Options{Dir: dir2, Deliverer: block, Retry: fastRetry()})
	id2 := enqueue(t, q2, env("a@b.c", "d@e.f"), "x")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	q2.Close(ctx)
	rec3 := newRecorder(nil)
	open(t, dir2, rec3, nil)
	waitFor(t, "delivered after restart", func() bool { return rec3.count() == 1 })
	if _, ok := rec3.delivered[id2]; !ok {
		t.Error("message lost across a deadline close")
	}
}

// TestQueue_LargeMessageBoundedMemory streams 35 MB through Enqueue and
// checks the heap did not grow with the message.
func TestQueue_LargeMessageBoundedMemory(t *testing.T) {
	q := open(t, t.TempDir(), newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} }), nil)
	q.Pause("helpdesk", "hold")
	const size = 35 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	id, err := q.Enqueue(context.Background(), env("a@b.c", "d@e.f"), io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("enqueue of 35 MB allocated %d bytes; it must stream", grew)
	}
	if m, _ := q.Get(id); m.Size != size {
		t.Errorf("size %d", m.Size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestStore_LogCompaction: with small segments, delivered messages' segments
// are deleted, and a long-deferred message does not pin the log: it is
// copied forward and the old segments go.
func TestStore_LogCompaction(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder(func(d *Delivery) Result {
		if d.To[0] == "stuck@example.com" {
			return allWith(d, Deferred, tempReply)
		}
		return deliverAll(d)
	})
	small := func(o *Options) {
		o.SegmentMax = 16 << 10
		o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour}
	}
	q := open(t, dir, rec, small)
	stuck := enqueue(t, q, env("a@contoso.com", "stuck@example.com"), "still waiting "+strings.Repeat("s", 2000))
	for i := range 200 {
		enqueue(t, q, env("a@contoso.com", "ok@example.com"), fmt.Sprintf("message %d %s", i, strings.Repeat("x", 1000)))
	}
	waitFor(t, "all delivered", func() bool { return rec.count() == 200 })
	q.store.kickMaintenance()
	waitFor(t, "log compacted", func() bool { return len(files(t, filepath.Join(dir, dirLog))) <= 3 })
	body, err := q.OpenBody(stuck)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if !strings.HasPrefix(string(b), "still waiting") {
		t.Fatalf("stuck message's body after compaction: %.40q", b)
	}
	q.Close(context.Background())
	disk := onDisk(t, dir)
	if len(disk) != 1 || disk[stuck] == nil || disk[stuck].Attempts != 1 {
		t.Fatalf("on disk after compaction: %v", disk)
	}
	rec2 := newRecorder(nil)
	q2 := open(t, dir, rec2, small)
	if err := q2.RetryNow(stuck); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stuck one delivered after restart", func() bool { return rec2.count() == 1 })
	if !strings.HasPrefix(string(rec2.delivered[stuck]), "still waiting") {
		t.Fatal("wrong body after restart")
	}
}

// TestStore_ImportsLegacySpool: a spool of the earlier layout (meta/<id>.json
// beside msg/<id>.eml, spare/) is converted at open and its mail delivered.
func TestStore_ImportsLegacySpool(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{legacyMeta, dirMsg, legacySpare} {
		os.MkdirAll(filepath.Join(dir, d), 0o700)
	}
	now := time.Now()
	m := &Meta{Version: MetaVersion, ID: newID(now), From: "a@contoso.com", Account: "helpdesk", Arrived: now, AgeFrom: now, NextAttempt: now,
		Recipients: []Recipient{{Addr: "b@example.com", State: StateDeferred}}, Attempts: 2}
	b, _ := json.Marshal(m)
	os.WriteFile(filepath.Join(dir, legacyMeta, m.ID+".json"), b, 0o600)
	os.WriteFile(filepath.Join(dir, dirMsg, m.ID+".eml"), []byte("from the old layout"), 0o600)
	os.WriteFile(filepath.Join(dir, legacyMeta, "0123456789abcdef0123.json"), []byte("{broken"), 0o600)
	os.WriteFile(filepath.Join(dir, legacySpare, "x-1"), []byte("garbage"), 0o600)
	rec := newRecorder(nil)
	open(t, dir, rec, nil)
	waitFor(t, "delivered", func() bool { return rec.count() == 1 })
	if string(rec.delivered[m.ID]) != "from the old layout" {
		t.Fatalf("delivered %v", rec.delivered)
	}
	for _, d := range []string{legacyMeta, legacySpare} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			t.Errorf("%s/ still there", d)
		}
	}
	if got := files(t, filepath.Join(dir, dirCorrupt)); len(got) != 1 {
		t.Errorf("corrupt/ holds %v, want the unreadable meta", got)
	}
}

// TestQueue_FailedBodyKept: a failed message's body is kept intact in
// failed/ while later messages come and go.
func TestQueue_FailedBodyKept(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder(func(d *Delivery) Result {
		if d.To[0] == "perm@x.y" {
			return allWith(d, Failed, permReply)
		}
		return deliverAll(d)
	})
	q := open(t, dir, rec, func(o *Options) { o.SegmentMax = 4 << 10 })
	failedID := enqueue(t, q, env("", "perm@x.y"), "keep this body")
	waitFor(t, "failed", func() bool { m, _ := q.Get(failedID); return m.State == MsgFailed })
	for i := range 30 {
		enqueue(t, q, env("a@contoso.com", "ok@x.y"), fmt.Sprintf("overwrite attempt %d %s", i, strings.Repeat("y", 500)))
	}
	waitFor(t, "delivered", func() bool { return rec.count() == 30 })
	body, err := q.OpenBody(failedID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "keep this body" {
		t.Fatalf("failed message's body was overwritten: %q", b)
	}
}

// TestQueue_PausedBeforeFirstMessageResumes: an account paused before it
// ever had mail (serve starting with an account that needs reconnecting)
// delivers once resumed.
func TestQueue_PausedBeforeFirstMessageResumes(t *testing.T) {
	rec := newRecorder(nil)
	q := open(t, t.TempDir(), rec, nil)
	q.Pause("helpdesk", "needs reconnect")
	q.poke()
	time.Sleep(20 * time.Millisecond) // let the scheduler see the pause first
	id := enqueue(t, q, env("a@contoso.com", "b@example.com"), "m")
	q.Resume("helpdesk")
	waitFor(t, "delivery after resume", func() bool { return rec.count() == 1 })
	if _, ok := rec.delivered[id]; !ok {
		t.Fatal("wrong message delivered")
	}
}

func TestInspect_ReadsSpoolWithoutChangingIt(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder(func(d *Delivery) Result {
		if d.To[0] == "perm@x.y" {
			return allWith(d, Failed, permReply)
		}
		return allWith(d, Deferred, tempReply)
	})
	q := open(t, dir, rec, func(o *Options) {
		o.Retry = RetryPolicy{Delays: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour}
		o.InlineMax = 10
	})
	small := enqueue(t, q, env("a@contoso.com", "later@x.y"), "small")
	large := enqueue(t, q, env("a@contoso.com", "later@x.y"), "larger than ten bytes")
	perm := enqueue(t, q, env("", "perm@x.y"), "failed one")
	waitFor(t, "attempted", func() bool {
		m, _ := q.Get(perm)
		return len(q.List(Filter{State: MsgDeferred})) == 2 && m.State == MsgFailed
	})
	before := files(t, filepath.Join(dir, dirLog))
	live, failed, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 2 || live[0].ID != small || live[1].ID != large || live[0].Attempts != 1 || live[0].Recipients[0].Last.Code != 451 {
		t.Fatalf("live %+v", live)
	}
	if len(failed) != 1 || failed[0].ID != perm {
		t.Fatalf("failed %+v", failed)
	}
	for id, want := range map[string]string{small: "small", large: "larger than ten bytes", perm: "failed one"} {
		r, err := InspectBody(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		if string(b) != want {
			t.Errorf("%s: %q", id, b)
		}
	}
	if _, err := InspectBody(dir, "0123456789abcdef0123"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if after := files(t, filepath.Join(dir, dirLog)); !slices.Equal(before, after) {
		t.Errorf("log/ changed: %v → %v", before, after)
	}
}

// TestStore_FailedFdatasyncPoisonsSegment: after an fdatasync error nothing
// written to that segment before is acknowledged (Linux reports the error
// once; a later fdatasync could succeed over lost pages), and new messages
// go to a fresh segment.
func TestStore_FailedFdatasyncPoisonsSegment(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} }), nil)
	q.Pause("helpdesk", "hold")
	enqueue(t, q, env("a@contoso.com", "b@example.com"), "before")
	segsBefore := len(files(t, filepath.Join(dir, dirLog)))
	q.store.mu.Lock()
	q.store.syncFault = func() error { return syscall.EIO }
	q.store.mu.Unlock()
	if _, err := q.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), strings.NewReader("during")); !errors.Is(err, ErrDiskTrouble) {
		t.Fatalf("want ErrDiskTrouble, got %v", err)
	}
	q.store.mu.Lock()
	q.store.syncFault = nil
	q.store.mu.Unlock()
	enqueue(t, q, env("a@contoso.com", "b@example.com"), "after")
	if n := len(files(t, filepath.Join(dir, dirLog))); n != segsBefore+1 {
		t.Errorf("%d segments, want a new one after the failed fdatasync (%d before)", n, segsBefore)
	}
	if n := len(q.List(Filter{})); n != 2 {
		t.Errorf("%d messages listed, want the 2 acknowledged", n)
	}
}

func TestQueue_OneRelayPerSpool(t *testing.T) {
	dir := t.TempDir()
	q1 := open(t, dir, newRecorder(nil), nil)
	_, err := Open(Options{Dir: dir, Deliverer: newRecorder(nil)})
	if err == nil || !strings.Contains(err.Error(), "in use by another oauthrelay") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("a second queue on the same spool must be refused clearly: %v", err)
	}
	q1.Close(context.Background())
	q2, err := Open(Options{Dir: dir, Deliverer: newRecorder(nil)})
	if err != nil {
		t.Fatalf("after Close the spool must open: %v", err)
	}
	q2.Close(context.Background())
}
