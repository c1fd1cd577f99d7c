package queue

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
)

// Enqueue benchmarks measure fully durable enqueues (body and meta fsynced,
// renamed, directories fsynced) with deliveries held back by a pause.
//
//	go test ./queue -run '^$' -bench Enqueue -benchtime 3000x

func benchQueue(b *testing.B) *Queue {
	q, err := Open(Options{Dir: b.TempDir(), Deliverer: DelivererFunc(func(context.Context, *Delivery) Result { return Result{PauseAccount: "bench"} })})
	if err != nil {
		b.Fatal(err)
	}
	q.Pause("helpdesk", "benchmark: enqueue only")
	b.Cleanup(func() { q.Close(context.Background()) })
	return q
}

var body4k = bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 64)

func BenchmarkEnqueue4KiB(b *testing.B) {
	q := benchQueue(b)
	e := env("a@contoso.com", "b@example.com")
	b.SetBytes(int64(len(body4k)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Enqueue(context.Background(), e, bytes.NewReader(body4k)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkEnqueue4KiBParallel20 runs 20 concurrent writers, as 20 SMTP
// clients would; group commit shares directory fsyncs between them.
func BenchmarkEnqueue4KiBParallel20(b *testing.B) {
	q := benchQueue(b)
	e := env("a@contoso.com", "b@example.com")
	b.SetBytes(int64(len(body4k)))
	b.ReportAllocs()
	b.SetParallelism(10) // 10 × GOMAXPROCS(2) = 20 writers on the project's machines
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Enqueue(context.Background(), e, bytes.NewReader(body4k)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkEnqueue35MB shows that a large message streams: allocations per
// operation stay small and do not depend on the message size.
func BenchmarkEnqueue35MB(b *testing.B) {
	q := benchQueue(b)
	e := env("a@contoso.com", "b@example.com")
	const size = 35 << 20
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Enqueue(context.Background(), e, io.LimitReader(zeros{}, size)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecover20k measures Open on a spool holding 20,000 queued 4 KiB
// messages (reading the whole log and rebuilding the schedule).
//
//	go test ./queue -run '^$' -bench Recover20k -benchtime 5x
func BenchmarkRecover20k(b *testing.B) {
	dir := b.TempDir()
	hold := DelivererFunc(func(context.Context, *Delivery) Result { return Result{PauseAccount: "bench"} })
	q, err := Open(Options{Dir: dir, Deliverer: hold})
	if err != nil {
		b.Fatal(err)
	}
	q.Pause("helpdesk", "benchmark: fill only")
	e := env("a@contoso.com", "b@example.com")
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if _, err := q.Enqueue(context.Background(), e, bytes.NewReader(body4k)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
		_ = w
	}
	wg.Wait()
	q.Close(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		q, err := Open(Options{Dir: dir, Deliverer: hold})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if n := len(q.List(Filter{})); n != 20000 {
			b.Fatalf("%d messages after reopening", n)
		}
		q.Pause("helpdesk", "bench")
		q.Close(context.Background())
		b.StartTimer()
	}
}
