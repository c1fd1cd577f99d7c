package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
)

// Microsoft down (421 at the greeting) is the upstream's outage, not each
// message's failure: queued mail uses up no attempts and is not pushed back
// on its retry schedule; when Microsoft is back, a probe finds out within
// the probe interval and everything flows at once.
func TestE2E_OutageCostsNoRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.Retry = []time.Duration{time.Hour} // a counted deferral would hold mail for an hour
	}, daemon.Hooks{TuneQueue: func(o *queue.Options) { o.ProbeMin, o.ProbeMax = 50*time.Millisecond, 300*time.Millisecond }})
	h.connect()
	h.fake.SMTP.SetDown(true)
	var ids []string
	for i := range 20 {
		reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(i, mailbox, "bob@example.com", ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, queueID(t, reply))
	}
	time.Sleep(time.Second) // several probes fail
	for _, id := range ids {
		if m, _ := h.relay.Queue.Get(id); m.Attempts != 0 {
			t.Fatalf("%s used %d attempts during the outage", id, m.Attempts)
		}
	}
	if st := h.relay.Queue.Stats(); st.UpstreamDown == "" || !strings.Contains(st.UpstreamDown, "421") {
		t.Errorf("stats do not show the outage: %+v", st)
	}
	if _, body := api(t, h, "GET", "/api/status", h.relay.AdminToken); !strings.Contains(body, "upstream_down") {
		t.Errorf("/api/status does not show the outage: %s", body)
	}
	// Retry and flush say the mail is held, not "scheduled".
	if code, body := api(t, h, "POST", "/api/queue/"+ids[0]+"/retry", h.relay.AdminToken); code != http.StatusConflict || !strings.Contains(body, "cannot be reached") {
		t.Errorf("retry during an outage: %d %s", code, body)
	}
	if _, body := api(t, h, "POST", "/api/queue/flush", h.relay.AdminToken); !strings.Contains(body, `"held"`) {
		t.Errorf("flush during an outage: %s", body)
	}
	if m, _ := h.relay.Queue.Get(ids[0]); !strings.Contains(m.Held, "next probe") {
		t.Errorf("queue show during an outage: held %q", m.Held)
	}
	probesBefore := h.fake.SMTP.Connections()
	h.fake.SMTP.SetDown(false)
	back := time.Now()
	msgs := h.fake.SMTP.WaitMessages(20, 5*time.Second)
	if len(msgs) != 20 {
		t.Fatalf("%d of 20 delivered after the outage", len(msgs))
	}
	if d := time.Since(back); d > 2*time.Second {
		t.Errorf("delivery after the outage took %s", d)
	}
	if probesBefore > 40 {
		t.Errorf("%d connections during a 1 s outage: probes are not backing off", probesBefore)
	}
}

// An upstream that stops reading in the middle of DATA does not hold a
// delivery (or shutdown) longer than command_timeout: the message is
// deferred, and SIGTERM's shutdown finishes in time.
func TestE2E_StalledUpstreamNeverHangs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.CommandTimeout = time.Second
	}, daemon.Hooks{})
	h.connect()
	h.fake.SMTP.StallDuringData(100)
	defer h.fake.SMTP.StallDuringData(0)
	body := message(1, mailbox, "bob@example.com", strings.Repeat(strings.Repeat("x", 998)+"\r\n", 20<<10)) // 20 MB
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "the stalled delivery deferred", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgDeferred })

	// Stalled again, now cut by shutdown.
	reply, err = send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a delivery in flight", 10*time.Second, func() bool { return messageState(h.relay, queueID(t, reply)) == queue.MsgInflight })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	h.relay.Shutdown(ctx)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown with a stalled upstream took %s", d)
	}
}

// Microsoft counts sessions: never more than delivery.connections open at
// once, even while sessions are rotated (messages_per_connection) under load.
func TestE2E_NeverMoreSessionsThanConnections(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.Connections = 3
		c.Delivery.MessagesPerConnection = 1 // every message closes its session
	}, daemon.Hooks{})
	h.connect()
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				n := w*100 + i
				if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(n, mailbox, "bob@example.com", ""), nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := len(h.fake.SMTP.WaitMessages(150, 30*time.Second)); got != 150 {
		t.Fatalf("%d of 150 delivered", got)
	}
	if p := h.fake.SMTP.PeakConnections(); p > 3 {
		t.Errorf("upstream saw %d sessions at once with delivery.connections 3", p)
	}
}

// A panic in delivery is recovered, logged with its stack and counted; the
// message is deferred and delivered on its next attempt; the relay lives on.
func TestE2E_PanicInDeliveryIsDeferred(t *testing.T) {
	t.Parallel()
	var once sync.Once
	h := newHarness(t, nil, daemon.Hooks{Upstream: relay.UpstreamEvents{ConnOpened: func(string) {
		once.Do(func() { panic(fmt.Sprintf("boom %d", 42)) })
	}}})
	h.connect()
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	queueID(t, reply)
	if got := byTestID(h.fake.SMTP.WaitMessages(1, 10*time.Second)); got["1"].Data == nil {
		t.Fatal("message not delivered after the panic")
	}
	if logs := h.logs.String(); !strings.Contains(logs, "boom 42") || !strings.Contains(logs, "goroutine") {
		t.Errorf("panic not logged with its stack")
	}
	if _, body := api(t, h, "GET", "/metrics", h.relay.AdminToken); !strings.Contains(body, "oauthrelay_delivery_panics_total 1") {
		t.Errorf("panic not counted")
	}
}
