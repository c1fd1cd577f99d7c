package integration

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
)

// While serve runs, `oauthrelay connect --device` runs the sign-in in the
// relay: the CLI never writes the service's keysafe, so running it as root
// beside a service with its own user cannot take the files away from it.
// The keysafe here belongs to another user; after connect it still does.
func TestCLI_ConnectDeviceGoesThroughTheRunningRelay(t *testing.T) {
	t.Parallel()
	fake, c, file := processConfig(t)
	c.Accounts[0].Flow = configs.FlowDeviceCode
	writeConfig(t, c, file)
	os.Chown(c.Keysafe.Path, 61234, 61234)
	p := startServe(t, file, c.Listen.Addr)

	cmd := exec.Command(binary, "connect", "helpdesk", "--device", "--config", file)
	cmd.Stderr = p.stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile(`enter the code (\S+),`).FindStringSubmatch(line)
	if code == nil {
		t.Fatalf("no device code in %q", line)
	}
	resp, err := http.Get(fake.Entra.URL + "/device?code=" + url.QueryEscape(code[1]) + "&upn=" + url.QueryEscape("someone.else@contoso.test"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	rest, _ := io.ReadAll(r)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connect: %v\n%s", err, rest)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("connect did not finish")
	}
	if !strings.Contains(string(rest), "Connected as someone.else@contoso.test") || !strings.Contains(string(rest), "Warning: signed in as someone.else@contoso.test; this account sends as "+mailbox) {
		t.Errorf("connect printed:\n%s", rest)
	}
	info, err := os.Stat(c.Keysafe.Path)
	if err != nil {
		t.Fatal(err)
	}
	if st := info.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && st.Uid != 61234 {
		t.Errorf("the keysafe now belongs to uid %d", st.Uid)
	}
	if !strings.Contains(p.stderr.String(), "admin: device sign-in started") {
		t.Errorf("the sign-in did not run in the relay")
	}
}
