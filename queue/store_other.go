//go:build !linux

package queue

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

func lockSpool(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func preallocate(f *os.File, n int64) error { return writeZeros(f, n) }

// freeSpace is unknown here: laying the reserve down again is the test.
func freeSpace(string) (int64, error) { return 1 << 62, nil }

func preallocKeepSize(*os.File, int64) error { return nil }
