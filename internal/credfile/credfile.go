// Package credfile reads the small files an admin names for credentials
// and secrets (a client secret, a certificate, a private key, a service
// account's JSON key, the admin token): regular files only, and small, so
// that a FIFO does not hang a start or a check and /dev/zero does not fill
// memory.
package credfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxSize is the largest credential file read (a certificate chain or a
// JSON key is a few KiB).
const MaxSize = 1 << 20

// ErrNotRegular is returned for a path that is not a regular file.
var ErrNotRegular = errors.New("is not a regular file")

// Read returns the contents of the regular file path, at most MaxSize
// bytes. Errors wrap the os error (fs.ErrNotExist, fs.ErrPermission) or
// ErrNotRegular, and say what path is.
func Read(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		what := "a directory"
		switch m := fi.Mode(); {
		case m&os.ModeNamedPipe != 0:
			what = "a named pipe (FIFO)"
		case m&os.ModeDevice != 0, m&os.ModeCharDevice != 0:
			what = "a device"
		case m&os.ModeSocket != 0:
			what = "a socket"
		case !m.IsDir():
			what = "not a file"
		}
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: it is %s", ErrNotRegular, what)}
	}
	if fi.Size() > MaxSize {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("is %d bytes, more than a credential file holds (at most %d)", fi.Size(), MaxSize)}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("grew past %d bytes while being read", MaxSize)}
	}
	return b, nil
}

// Stamp identifies the current contents of files by size and modification
// time (a file that cannot be stat'ed counts as "-"), so a caller can tell
// when one was replaced — a renewed certificate, a rotated key — without
// reading them. Empty paths are skipped.
func Stamp(files ...string) string {
	s := ""
	for _, f := range files {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d:%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			s += "-;"
		}
	}
	return s
}
