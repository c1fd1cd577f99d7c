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
	var dir, smtpAddr string
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		if m := regexp.MustCompile(`SMTP on (\S+),`).FindStringSubmatch(sc.Text()); m != nil {
			smtpAddr = m[1]
		}
		if m := regexp.MustCompile(`removes (\S+)\)`).FindStringSubmatch(sc.Text()); m != nil {
			dir = m[1]
			break
		}
	}
	// While it is kept, mail sent to it is delivered (it once hung its
	// stop after the first extra message).
	for i := range 3 {
		if _, err := send(smtpAddr, "alerts@contoso.test", []string{"bob@example.com"}, message(i, "alerts@contoso.test", "bob@example.com", ""), nil); err != nil {
			t.Fatalf("sending to the kept demo at %q: %v", smtpAddr, err)
		}
	}
	time.Sleep(time.Second)
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

// The CLI run as root, without the service's environment: an account's
// secret that only serve can resolve (${VAR} from the unit's environment,
// a systemd credential) does not stop the client commands, which talk to
// the running relay; serve itself still needs it.
func TestCLI_ClientCommandsIgnoreSecretsOnlyServeReads(t *testing.T) {
	fake, c, file := processConfig(t)
	fake.Entra.RegisterClient("app-client", "app-secret")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// An account whose secret is a ${VAR}: written by hand, as the file's
	// writer masks secrets.
	app := `accounts:
    - name: app
      tenant: contoso.test
      client_id: app-client
      client_secret: ${APP_SECRET}
      flow: client_credentials
      authority: ` + c.Accounts[0].Authority + `
      mailbox: app@contoso.test
      senders: ["app@contoso.test"]
`
	if !strings.Contains(string(raw), "\naccounts:\n") {
		t.Fatalf("no accounts in %s", raw)
	}
	os.WriteFile(file, []byte(strings.Replace(string(raw), "\naccounts:\n", "\n"+app, 1)), 0o600)
	t.Setenv("APP_SECRET", "app-secret") // serve's environment only
	startServe(t, file, c.Listen.Addr)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for _, args := range [][]string{{"accounts"}, {"queue", "list"}, {"health"}, {"connect", "app"}} {
		out, errOut, code := cli(t, t.TempDir(), env, append(args, "--config", file)...)
		if code != 0 {
			t.Errorf("%v without APP_SECRET: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	// Serve without the secret refuses to start, naming the key.
	_, errOut, code := cli(t, t.TempDir(), env, "check-config", "--config", file)
	if code != 2 || !strings.Contains(errOut, "accounts[0].client_secret") {
		t.Errorf("check-config without APP_SECRET: exit %d\n%s", code, errOut)
	}
}
