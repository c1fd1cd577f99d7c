package queue

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back (its
// size), not its timestamps: cheaper than fsync for an appended log.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// lockSpool takes an exclusive flock on path (created if needed), so two
// relays never share a spool. The kernel drops it when the process dies.
func lockSpool(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// preallocate gives f n bytes of allocated disk space (not a sparse hole).
func preallocate(f *os.File, n int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.Fallocate(int(fd), 0, 0, n)
	})
	if err != nil {
		return err
	}
	if serr == syscall.EOPNOTSUPP {
		return writeZeros(f, n)
	}
	return serr
}

// freeSpace is how many bytes an unprivileged writer can still use on the
// filesystem holding dir.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// preallocKeepSize allocates n bytes of disk for f without changing its
// size, so later appends up to n need no new blocks.
func preallocKeepSize(f *os.File, n int64) error {
	const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.Fallocate(int(fd), keepSize, 0, n)
	})
	if err != nil {
		return err
	}
	return serr
}
