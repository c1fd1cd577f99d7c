package tokens

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// TestKeysafe_CrashBeforeRenameKeepsOldContent stops a write between the
// temp file and the rename, as a crash would, and reopens the keysafe.
func TestKeysafe_CrashBeforeRenameKeepsOldContent(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	path := filepath.Join(t.TempDir(), "keysafe.bin")
	k, err := OpenFileKeysafe(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Put(Record{Account: "a", RefreshToken: "old"}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	k.beforeRename = func() { runtime.Goexit() }
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Put(Record{Account: "a", RefreshToken: "new"})
	}()
	<-done
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("the keysafe changed although the rename never happened")
	}
	k2, err := OpenFileKeysafe(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := k2.Get("a"); r.RefreshToken != "old" {
		t.Errorf("after the crash: %q, want the old content", r.RefreshToken)
	}
}

// Run as root beside a service that has its own user, the CLI's writes
// keep the keysafe, its lock and new secret files owned by that user.
func TestKeysafe_WritesKeepTheOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root; this test must run there")
		}
		t.Skip("needs root to give files to another user")
	}
	dir := t.TempDir()
	const uid, gid = 61234, 61235 // a service's DynamicUser
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keysafe.bin")
	key := make([]byte, 32)
	k, err := OpenFileKeysafe(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Put(Record{Account: "helpdesk", RefreshToken: "rt-1"}); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) (int, int) {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		return int(st.Uid), int(st.Gid)
	}
	for _, p := range []string{path, path + ".lock"} {
		if u, g := owner(p); u != uid || g != gid {
			t.Errorf("%s owned by %d:%d, want the folder's %d:%d", filepath.Base(p), u, g, uid, gid)
		}
	}
	// An existing keysafe owned by the service stays the service's.
	os.Chown(path, uid+1, gid+1)
	if err := k.Put(Record{Account: "helpdesk", RefreshToken: "rt-2"}); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(path); u != uid+1 || g != gid+1 {
		t.Errorf("rewritten keysafe owned by %d:%d, want %d:%d", u, g, uid+1, gid+1)
	}
	if _, err := LoadKey("", filepath.Join(dir, "new.key"), filepath.Join(dir, "other.bin"), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if u, _ := owner(filepath.Join(dir, "new.key")); u != uid {
		t.Errorf("a new key file owned by %d, want %d", u, uid)
	}
}
