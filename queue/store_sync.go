package queue

// Group commit (syncer), folder fsyncs, and telling a client's read
// errors from the disk's.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// readErr marks errors that came from the reader, not the disk.
type readErr struct{ err error }

func (e readErr) Error() string { return e.err.Error() }

func (e readErr) Unwrap() error { return e.err }

// errReader wraps a reader so its errors can be told from write errors.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = readErr{err}
	}
	return n, err
}

func isReadErr(err error) bool {
	var re readErr
	return errors.As(err, &re)
}

func syncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncer shares fsyncs between concurrent callers (group commit): one runs
// at a time, and a caller returns only after one that started after its
// call has finished, so its own write is covered.
type syncer struct {
	do func() error

	mu         sync.Mutex
	cond       *sync.Cond
	started    uint64
	completed  uint64
	running    bool
	lastErr    error
	lastErrGen uint64
}

func newDirSyncer(dir string) *syncer {
	d := &syncer{do: func() error { return syncDir(dir) }}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *syncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	target := d.started + 1 // a running fsync may have started before our write
	for d.completed < target {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		gen := d.started
		d.mu.Unlock()
		err := d.do()
		d.mu.Lock()
		d.running = false
		d.completed = gen
		if err != nil {
			d.lastErr, d.lastErrGen = err, gen
		}
		d.cond.Broadcast()
	}
	if d.lastErr != nil && d.lastErrGen >= target {
		return d.lastErr
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// diskErr wraps a failed write as ErrDiskTrouble, keeping the cause
// matchable (errors.Is(err, syscall.ENOSPC)).
func diskErr(err error) error {
	return fmt.Errorf("%w: %w", ErrDiskTrouble, err)
}
