package queue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashBody is message n's body: some fit in the log, some go to msg/.
func crashBody(n int) string {
	size := 50 + n%7*400 // up to 2,450 bytes; InlineMax is 1,000 in the child
	return fmt.Sprintf("message %d\r\n%s", n, strings.Repeat(string(rune('a'+n%26)), size))
}

// TestQueue_KillDuringLoad runs a queue in a child process under load —
// 8 writers, deliveries that succeed, defer or fail, small segments so
// rotation, collection and compaction run all the time — kills it with
// SIGKILL at a random moment, reopens the spool and checks that every
// message the child acknowledged is still queued with its exact body, or
// was delivered, or is in failed/. Repeated a few times.
func TestQueue_KillDuringLoad(t *testing.T) {
	if os.Getenv("QUEUE_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	for round := range 3 {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run", "^TestQueue_KillDuringLoad$", "-test.v=false")
		cmd.Env = append(os.Environ(), "QUEUE_CRASH_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]int{}
		finished := map[string]bool{}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		deadline := time.After(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
		killed := false
		for !killed {
			select {
			case l := <-lines:
				noteLine(l, acked, finished)
			case <-deadline:
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		for l := range lines {
			noteLine(l, acked, finished)
		}
		cmd.Wait()
		if len(acked) < 50 {
			t.Fatalf("round %d: the child acknowledged only %d messages before the kill", round, len(acked))
		}

		q, err := Open(Options{Dir: dir, Deliverer: DelivererFunc(func(context.Context, *Delivery) Result { return Result{PauseAccount: "check"} }), InlineMax: 1000, SegmentMax: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		q.Pause("helpdesk", "checking")
		lost := 0
		for id, n := range acked {
			if finished[id] {
				continue
			}
			if _, err := q.Get(id); err != nil {
				lost++
				t.Errorf("round %d: acknowledged message %s (n=%d) lost", round, id, n)
				continue
			}
			r, err := q.OpenBody(id)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r)
			r.Close()
			if string(b) != crashBody(n) {
				t.Errorf("round %d: %s body differs after the kill", round, id)
			}
		}
		if left := files(t, dir+"/corrupt"); len(left) != 0 {
			t.Errorf("round %d: corrupt/ after a kill: %v", round, left)
		}
		segs, _ := q.store.segments()
		t.Logf("round %d: %d acknowledged, %d finished before the kill, %d lost; %d in the queue after reopening, log segments %d..%d",
			round, len(acked), len(finished), lost, len(q.List(Filter{})), segs[0], segs[len(segs)-1])
		q.Close(context.Background())
	}
}

func noteLine(l string, acked map[string]int, finished map[string]bool) {
	f := strings.Fields(l)
	switch {
	case len(f) == 3 && f[0] == "ACK":
		n, _ := strconv.Atoi(f[2])
		acked[f[1]] = n
	case len(f) == 2 && f[0] == "DONE":
		finished[f[1]] = true
	}
}

// crashChild is the child side: it enqueues and delivers until killed.
func crashChild() {
	dir := os.Getenv("QUEUE_CRASH_CHILD")
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(w, format+"\n", a...)
		w.Flush()
		mu.Unlock()
	}
	var attempts sync.Map
	deliver := DelivererFunc(func(_ context.Context, d *Delivery) Result {
		r, err := d.Open()
		if err != nil {
			panic(err)
		}
		var b bytes.Buffer
		io.Copy(&b, r)
		r.Close()
		v, _ := attempts.LoadOrStore(d.ID, new(int))
		*v.(*int)++
		var res Result
		for _, to := range d.To {
			o := Delivered
			switch {
			case strings.HasPrefix(to, "defer") && *v.(*int) < 3:
				o = Deferred
			case strings.HasPrefix(to, "fail"):
				o = Failed
			}
			res.Recipients = append(res.Recipients, RcptResult{Addr: to, Outcome: o, Reply: Reply{Code: 250}})
			if o != Deferred {
				say("DONE %s", d.ID) // delivered or failed: the queue may drop it from now on
			}
		}
		return res
	})
	q, err := Open(Options{Dir: dir, Deliverer: deliver, InlineMax: 1000, SegmentMax: 64 << 10,
		Retry:  RetryPolicy{Delays: []time.Duration{20 * time.Millisecond}, MaxAge: time.Hour},
		Bounce: func(context.Context, *Bounce) error { return nil }})
	if err != nil {
		panic(err)
	}
	var n sync.Mutex
	next := 0
	for range 8 {
		go func() {
			for {
				n.Lock()
				i := next
				next++
				n.Unlock()
				to := []string{"ok@example.com", "defer@example.com", "fail@example.com", "ok2@example.com"}[i%4]
				id, err := q.Enqueue(context.Background(), Envelope{From: "a@contoso.com", To: []string{to}, Account: "helpdesk"}, strings.NewReader(crashBody(i)))
				if err != nil {
					panic(err)
				}
				say("ACK %s %d", id, i)
				time.Sleep(2 * time.Millisecond) // let deliveries keep up, so segments drain and compact
			}
		}()
	}
	select {}
}
