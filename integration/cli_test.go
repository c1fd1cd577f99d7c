package integration

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `demo --keep` stopped with SIGTERM (as a service manager or `kill` does)
// removes its temporary folder.
func TestCLI_DemoKeepCleansUpOnSIGTERM(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary, "demo", "--keep")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var dir string
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		if m := regexp.MustCompile(`removes (\S+)\)`).FindStringSubmatch(sc.Text()); m != nil {
			dir = m[1]
			break
		}
	}
	if dir == "" {
		t.Fatal("demo --keep did not say where it keeps its files")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the demo's folder %s: %v", dir, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for sc.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "signal") {
		t.Errorf("demo --keep after SIGTERM: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo's folder %s is still there after SIGTERM", dir)
	}
}
