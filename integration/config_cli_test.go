package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cli runs the built oauthrelay in dir with exactly env (nil: empty) and
// returns its stdout, stderr and exit code.
func cli(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func exampleConfig(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../configs/oauthrelay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var cliAccountEnv = []string{
	"OAUTHRELAY_ACCOUNTS_0_NAME=app",
	"OAUTHRELAY_ACCOUNTS_0_TENANT=contoso.com",
	"OAUTHRELAY_ACCOUNTS_0_CLIENT_ID=id",
	"OAUTHRELAY_ACCOUNTS_0_MAILBOX=app@contoso.com",
	"OAUTHRELAY_ACCOUNTS_0_SENDERS=*@contoso.com",
}

// The example configuration, used as documented (no environment at all),
// makes no command warn: its secrets are optional and come from OAUTHRELAY_*
// variables or *_file keys, not from ${VAR}s that are unset.
func TestCLI_ExampleConfigDoesNotWarn(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"health"},
		{"accounts"},
		{"queue", "list"},
		{"send", "--from", "a@contoso.com", "--to", "b@example.com"},
		{"check-config"},
	} {
		// (listen.addr moved so that send finds nobody.)
		_, stderr, _ := cli(t, dir, []string{"OAUTHRELAY_LISTEN_ADDR=127.0.0.1:1"}, append(args, "--config", exampleConfig(t))...)
		if strings.Contains(stderr, "warning") {
			t.Errorf("%s on the example config warns:\n%s", args, stderr)
		}
	}
}

// Client commands (health, accounts, queue, check, send) need only the admin
// address and token, or the listener's address: an unset ${VAR} elsewhere is
// serve's business, and they do not talk about it. One in a key they use is
// still said; serve and check-config say all.
func TestCLI_ClientCommandsWarnOnlyAboutKeysTheyUse(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "oauthrelay.yaml")
	os.WriteFile(file, []byte(`
admin:
  token: ${UNSET_ADMIN_TOKEN}
keysafe:
  path: `+filepath.Join(dir, "keysafe.bin")+`
accounts:
  - name: app
    tenant: contoso.com
    client_id: id
    client_secret: ${UNSET_CLIENT_SECRET}
    mailbox: app@contoso.com
    senders: ["*@contoso.com"]
`), 0o600)
	_, stderr, _ := cli(t, dir, nil, "health", "--config", file)
	if !strings.Contains(stderr, "${UNSET_ADMIN_TOKEN}") || strings.Contains(stderr, "UNSET_CLIENT_SECRET") {
		t.Errorf("health should warn about admin.token only:\n%s", stderr)
	}
	_, stderr, code := cli(t, dir, nil, "check-config", "--config", file)
	if code != 0 || !strings.Contains(stderr, "${UNSET_ADMIN_TOKEN}") || !strings.Contains(stderr, "${UNSET_CLIENT_SECRET}") {
		t.Errorf("check-config should pass and warn about both (exit %d):\n%s", code, stderr)
	}
}

func TestCLI_NoConfigFileNamesThePathsSearched(t *testing.T) {
	if _, err := os.Stat("/etc/oauthrelay/oauthrelay.yaml"); err == nil {
		t.Skip("this machine has /etc/oauthrelay/oauthrelay.yaml")
	}
	dir := t.TempDir()
	searched := []string{filepath.Join(dir, "oauthrelay.yaml"), "/etc/oauthrelay/oauthrelay.yaml"}

	stdout, stderr, code := cli(t, dir, cliAccountEnv, "check-config")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	for _, want := range append(searched, "no config file found", "OAUTHRELAY_*") {
		if !strings.Contains(stdout, want) {
			t.Errorf("check-config does not say %q:\n%s", want, stdout)
		}
	}

	// With problems, and from serve, the same is said before the problems:
	// "accounts: none configured" alone would not tell that the file was
	// not found.
	for _, cmd := range []string{"check-config", "serve"} {
		_, stderr, code := cli(t, dir, nil, cmd)
		if code != 2 || !strings.Contains(stderr, "accounts: none configured") {
			t.Fatalf("%s: exit %d, want 2 with the problem:\n%s", cmd, code, stderr)
		}
		for _, want := range append(searched, "no config file found") {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s does not say %q:\n%s", cmd, want, stderr)
			}
		}
	}
}

func TestCLI_CheckConfigRefusesWhatServeRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "oauthrelay.yaml")
	os.WriteFile(file, []byte(`
listen:
  read_timeout: 300
  max_sessions: sixteen
admin:
  token: short
keysafe:
  key: bm90IDMyIGJ5dGVz
accounts:
  - name: app
    tenant: contoso.com
    client_id: id
    mailbox: app@contoso.com
    senders: ["*@contoso.com"]
`), 0o600)
	_, stderr, code := cli(t, dir, []string{"OAUTHRELAY_LISTEN_ADR=0.0.0.0:2525", "OAUTHRELAY_DELIVERY_MAX_AGE=5d"}, "check-config", "--config", file)
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, stderr)
	}
	for _, want := range []string{
		"configuration has 6 problem(s)",
		"listen.read_timeout: 300 has no unit — e.g. 300s or 5m",
		`listen.max_sessions: "sixteen" is not a whole number — e.g. 100`,
		"admin.token: is 5 characters; serve needs at least 16 — make one with: head -c 24 /dev/urandom | base64",
		"keysafe.key: is the base64 of 12 bytes — it must be the base64 of 32 random bytes",
		"OAUTHRELAY_LISTEN_ADR: unknown variable — did you mean OAUTHRELAY_LISTEN_ADDR?",
		`OAUTHRELAY_DELIVERY_MAX_AGE: "5d": d (days) is not a unit — write hours, e.g. 120h`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("missing %q in:\n%s", want, stderr)
		}
	}
}

func TestCLI_CheckConfigShowsWhatAttachedIs(t *testing.T) {
	stdout, stderr, code := cli(t, t.TempDir(), append([]string{"OAUTHRELAY_LISTEN_ALLOWED_NETWORKS=attached,10.9.0.0/16"}, cliAccountEnv...), "check-config")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "# listen.allowed_networks: attached = 127.0.0.0/8, ::1/128") || !strings.Contains(stdout, "- 10.9.0.0/16") {
		t.Errorf("check-config does not show what attached resolved to:\n%s", stdout)
	}
}
