package credfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	os.WriteFile(good, []byte("s3cret\n"), 0o600)
	if b, err := Read(good); err != nil || string(b) != "s3cret\n" {
		t.Fatalf("Read = %q, %v", b, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxSize+1), 0o600)
	if _, err := Read(big); err == nil || !strings.Contains(err.Error(), "more than a credential file holds") {
		t.Errorf("a 1 MiB+1 file: %v", err)
	}
	if _, err := Read(dir); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "a directory") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := Read("/dev/zero"); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "a device") {
		t.Errorf("/dev/zero: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Read(fifo); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "FIFO") {
			t.Errorf("a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO hangs")
	}
}

func TestStamp(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cert.pem")
	if got := Stamp(f, ""); got != "-;" {
		t.Errorf("a missing file: %q", got)
	}
	os.WriteFile(f, []byte("one"), 0o600)
	a := Stamp(f)
	os.WriteFile(f, []byte("other"), 0o600)
	if b := Stamp(f); b == a || b == "-;" {
		t.Errorf("a rewritten file keeps its stamp %q", a)
	}
}
