// Command fsbench measures what durable spool layouts cost on a disk: 20
// writers storing 4 KiB messages durably as two new files each (the first
// spool layout), one file, a file plus a shared journal, or records in one
// shared append-only log with group-committed fdatasync (the current
// layout). It prints messages per second and kernel/user CPU per message.
//
//	go run ./integration/fsbench -mode two
//	go run ./integration/fsbench -mode log
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type dirSyncer struct {
	dir                string
	mu                 sync.Mutex
	cond               *sync.Cond
	started, completed uint64
	running            bool
}

func newDS(d string) *dirSyncer { x := &dirSyncer{dir: d}; x.cond = sync.NewCond(&x.mu); return x }
func (d *dirSyncer) sync(f func() error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.started + 1
	for d.completed < t {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		g := d.started
		d.mu.Unlock()
		if f != nil {
			f()
		} else {
			fh, _ := os.Open(d.dir)
			fh.Sync()
			fh.Close()
		}
		d.mu.Lock()
		d.running = false
		d.completed = g
		d.cond.Broadcast()
	}
}

var body = make([]byte, 4096)
var meta = make([]byte, 400)

func newFile(p string, b []byte) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		panic(err)
	}
	f.Write(b)
	f.Sync()
	f.Close()
}

func main() {
	mode := flag.String("mode", "two", "two: body+meta files per message; one: one file; onejournal: body file + shared meta journal; log: one shared append-only log")
	n := flag.Int("n", 3000, "messages")
	w := flag.Int("w", 20, "concurrent writers")
	base := flag.String("dir", os.TempDir(), "folder on the disk to measure (a spool's disk)")
	flag.Parse()
	dir, err := os.MkdirTemp(*base, "fsbench")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"tmp", "msg", "meta", "log"} {
		os.Mkdir(filepath.Join(dir, d), 0o700)
	}
	msgDS, metaDS := newDS(filepath.Join(dir, "msg")), newDS(filepath.Join(dir, "meta"))
	var logMu sync.Mutex
	logF, _ := os.OpenFile(filepath.Join(dir, "log", "seg"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	logDS := newDS("")
	// preallocate a log so appends do not allocate? keep simple
	var ctr atomic.Int64
	var ru0 syscall.Rusage
	syscall.Getrusage(0, &ru0)
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < *w; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := ctr.Add(1)
				if i > int64(*n) {
					return
				}
				id := fmt.Sprint(i)
				switch *mode {
				case "two":
					var w2 sync.WaitGroup
					w2.Add(1)
					go func() { newFile(filepath.Join(dir, "tmp", id+".eml"), body); w2.Done() }()
					newFile(filepath.Join(dir, "tmp", id+".json"), meta)
					w2.Wait()
					os.Rename(filepath.Join(dir, "tmp", id+".eml"), filepath.Join(dir, "msg", id+".eml"))
					os.Rename(filepath.Join(dir, "tmp", id+".json"), filepath.Join(dir, "meta", id+".json"))
					var w3 sync.WaitGroup
					w3.Add(1)
					go func() { msgDS.sync(nil); w3.Done() }()
					metaDS.sync(nil)
					w3.Wait()
				case "one":
					b := append(append([]byte{}, meta...), body...)
					newFile(filepath.Join(dir, "tmp", id+".eml"), b)
					os.Rename(filepath.Join(dir, "tmp", id+".eml"), filepath.Join(dir, "msg", id+".eml"))
					msgDS.sync(nil)
				case "onejournal":
					newFile(filepath.Join(dir, "tmp", id+".eml"), body)
					os.Rename(filepath.Join(dir, "tmp", id+".eml"), filepath.Join(dir, "msg", id+".eml"))
					logMu.Lock()
					logF.Write(meta)
					logMu.Unlock()
					var w3 sync.WaitGroup
					w3.Add(1)
					go func() { msgDS.sync(nil); w3.Done() }()
					logDS.sync(func() error { return syscall.Fdatasync(int(logF.Fd())) })
					w3.Wait()
				case "log":
					rec := make([]byte, 8+len(meta)+len(body))
					binary.LittleEndian.PutUint64(rec, uint64(len(rec)))
					logMu.Lock()
					logF.Write(rec)
					logMu.Unlock()
					logDS.sync(func() error { return syscall.Fdatasync(int(logF.Fd())) })
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	var ru1 syscall.Rusage
	syscall.Getrusage(0, &ru1)
	sys := time.Duration(syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	usr := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime))
	fmt.Printf("%-10s w=%d n=%d %.0f/s  sys/op=%v usr/op=%v\n", *mode, *w, *n, float64(*n)/el.Seconds(), sys/time.Duration(*n), usr/time.Duration(*n))
}
