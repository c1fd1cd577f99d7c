package integration

import (
	"bytes"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/queue"
)

// body4k is a 4 KiB message with a unique X-Test-Id.
func body4k(i int) string {
	head := message(i, mailbox, "bob@example.com", "")
	return head + string(bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), (4096-len(head))/64))
}

// BenchmarkAcceptDurable20Clients: 20 concurrent SMTP clients, 4 KiB
// messages, each 250 only after fsync (delivery held back by a pause).
//
//	go test ./integration -run '^$' -bench AcceptDurable -benchtime 3000x
func BenchmarkAcceptDurable20Clients(b *testing.B) {
	h := newHarness(b, nil, daemon.Hooks{})
	h.relay.Queue.Pause("helpdesk", "benchmark: accept only")
	b.SetBytes(4096)
	b.ResetTimer()
	sendMany(b, h.relay.SMTPAddr(), b.N, 20, body4k)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkEndToEnd20Clients: accept, then deliver to the fake Microsoft
// 365 over STARTTLS + XOAUTH2 with pooled connections; pacing off. The
// clock stops when the fake holds every message.
//
//	go test ./integration -run '^$' -bench EndToEnd -benchtime 3000x
func BenchmarkEndToEnd20Clients(b *testing.B) {
	h := newHarness(b, nil, daemon.Hooks{})
	h.connect()
	b.SetBytes(4096)
	b.ResetTimer()
	sendMany(b, h.relay.SMTPAddr(), b.N, 20, body4k)
	got := len(h.fake.SMTP.WaitMessages(b.N, 5*time.Minute))
	b.StopTimer()
	if got < b.N {
		b.Fatalf("only %d of %d delivered", got, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(h.fake.SMTP.Connections()), "upstream-conns")
}

// BenchmarkOutageRecovery: b.N messages queued while Microsoft answers 421
// at the greeting (an outage), then Microsoft comes back. It reports how
// long until the first is delivered (at most the probe wait left when the
// upstream returned, reported as probe-wait-s) and the delivery rate of the
// whole backlog, to compare with BenchmarkEndToEnd20Clients at the same N.
//
//	go test ./integration -run '^$' -bench OutageRecovery -benchtime 10000x
func BenchmarkOutageRecovery(b *testing.B) {
	h := newHarness(b, nil, daemon.Hooks{})
	h.connect()
	h.fake.SMTP.SetDown(true)
	sendMany(b, h.relay.SMTPAddr(), b.N, 20, body4k)
	waitFor(b, "the outage noticed", time.Minute, func() bool { return h.relay.Queue.Stats().UpstreamDown != "" })
	for _, m := range h.relay.Queue.List(queue.Filter{}) {
		if m.Attempts != 0 {
			b.Fatalf("%s used %d attempts during the outage", m.ID, m.Attempts)
		}
	}
	probeWait := time.Until(h.relay.Queue.Stats().NextProbe)
	b.ResetTimer()
	h.fake.SMTP.SetDown(false)
	start := time.Now()
	h.fake.SMTP.WaitMessages(1, time.Minute)
	first := time.Since(start)
	got := len(h.fake.SMTP.WaitMessages(b.N, 5*time.Minute))
	b.StopTimer()
	if got < b.N {
		b.Fatalf("only %d of %d delivered after the outage", got, b.N)
	}
	b.ReportMetric(first.Seconds(), "first-s")
	b.ReportMetric(max(probeWait, 0).Seconds(), "probe-wait-s")
	b.ReportMetric(float64(b.N)/(b.Elapsed()-first).Seconds(), "msgs/s-after-first")
}
