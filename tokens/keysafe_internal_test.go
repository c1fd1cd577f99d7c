package tokens

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
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
