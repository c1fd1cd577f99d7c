package queue

// A full disk: spool/reserve, the disk-full state, and leaving it.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrDiskFull: the spool's disk is full. New mail is refused with 452 4.3.1
// until there is room again; queued mail is still delivered.
var ErrDiskFull = fmt.Errorf("%w: the spool's disk is full", ErrDiskTrouble)

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// diskFullLocked enters the disk-full state (logging it once) and releases
// spool/reserve; it reports whether that freed space now. Caller holds s.mu.
func (s *store) diskFullLocked(cause error) bool {
	if !s.full.Swap(true) {
		s.fullSince = time.Now()
		s.log.Error("queue: the spool's disk is full: new mail is refused with 452 4.3.1 until there is room; queued mail is still delivered", "dir", s.dir, "error", cause.Error())
	}
	err := os.Remove(filepath.Join(s.dir, "reserve"))
	if err == nil {
		s.log.Warn("queue: released spool/reserve so deliveries can record their progress", "bytes", s.reserve)
		return true
	}
	return false
}

// DiskFull reports since when the spool's disk has been full.
func (s *store) diskFull() (time.Time, bool) {
	if !s.full.Load() {
		return time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fullSince, true
}

// layReserve makes sure spool/reserve holds s.reserve bytes of allocated
// space. While the disk is full it succeeds only with as much room again to
// spare, and then leaves the disk-full state.
func (s *store) layReserve() error {
	if s.reserve <= 0 {
		if s.full.Load() {
			if free, err := freeSpace(s.dir); err != nil || free < 2*defaultReserve {
				return fmt.Errorf("%w: %d bytes free", ErrDiskFull, free)
			}
			s.leaveFull()
		}
		return nil
	}
	p := filepath.Join(s.dir, "reserve")
	if info, err := os.Stat(p); err == nil && info.Size() >= s.reserve && !s.full.Load() {
		return nil
	}
	if s.full.Load() {
		if free, err := freeSpace(s.dir); err != nil || free < 2*s.reserve {
			return fmt.Errorf("%w: %d bytes free", ErrDiskFull, free)
		}
	}
	tmp := filepath.Join(s.dir, dirTmp, "reserve")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		err = preallocate(f, s.reserve)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		if isNoSpace(err) {
			s.mu.Lock()
			s.diskFullLocked(err)
			s.mu.Unlock()
			return fmt.Errorf("%w: %v", ErrDiskFull, err)
		}
		return fmt.Errorf("%w: spool/reserve: %v", ErrDiskTrouble, err)
	}
	if s.full.Load() {
		s.leaveFull()
	}
	return nil
}

func (s *store) leaveFull() {
	s.mu.Lock()
	since := s.fullSince
	s.mu.Unlock()
	if s.full.Swap(false) {
		s.log.Info("queue: the spool's disk has room again; accepting new mail", "dir", s.dir, "was_full_for", time.Since(since).Round(time.Second).String())
	}
}

// checkWritable writes, syncs and removes a probe file in tmp/.
func (s *store) checkWritable() error {
	if since, full := s.diskFull(); full {
		return fmt.Errorf("%w since %s: new mail is refused with 452 4.3.1 until there is room; queued mail is still delivered", ErrDiskFull, since.UTC().Format(time.RFC3339))
	}
	p := s.path(dirTmp, "readyz-probe", ".tmp")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return diskErr(err)
	}
	_, err = f.Write([]byte("ok"))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(p)
	if err != nil {
		return diskErr(err)
	}
	return nil
}

func writeZeros(f *os.File, n int64) error {
	zero := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := f.Write(zero[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
