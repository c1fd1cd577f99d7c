//go:build !linux

package queue

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

func lockSpool(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
