package integration

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The README's "Running it for real" steps, as far as a container allows:
// files installed as the steps say are readable by the service's own
// (non-root) user, which runs check-config on them with its secrets in the
// environment, as systemd's EnvironmentFile gives them. The unit's old
// advice (0640 root:root) left the service unable to read its config.
func TestInstall_ServiceUserReadsInstalledFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root; this test must run there")
		}
		t.Skip("needs root to run as another user")
	}
	t.Parallel()
	root, err := os.MkdirTemp("", "oauthrelay-install-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	bin := filepath.Join(root, "oauthrelay")
	copyFile(t, binary, bin, 0o755)
	cfg := filepath.Join(root, "etc", "oauthrelay", "oauthrelay.yaml")
	// Step 3, as written in the README.
	if out, err := exec.Command("install", "-D", "-m", "0644", "../configs/oauthrelay.yaml", cfg).CombinedOutput(); err != nil {
		t.Fatalf("install: %v %s", err, out)
	}
	os.Chmod(filepath.Dir(cfg), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(cfg)), 0o755)
	asService := func() (string, error) {
		cmd := exec.Command(bin, "check-config", "--config", cfg)
		cmd.Env = []string{"OAUTHRELAY_ADMIN_TOKEN=a-long-enough-admin-token-0123", "HELPDESK_CLIENT_SECRET=s3cret"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asService(); err != nil || !strings.Contains(out, "configuration OK") {
		t.Errorf("the service's user cannot use the installed config: %v\n%s", err, out)
	}
	// The old advice: 0640 root:root.
	os.Chmod(cfg, 0o640)
	if out, err := asService(); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("a 0640 root config should be unreadable for the service (and say so): %v\n%s", err, out)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}
