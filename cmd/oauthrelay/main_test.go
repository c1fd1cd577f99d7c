package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/queue"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestCheckConfig_ExampleFileIsValid(t *testing.T) {
	out, err := run(t, "check-config", "--config", "../../configs/oauthrelay.yaml")
	if err != nil {
		t.Fatalf("the annotated example must pass: %v\n%s", err, out)
	}
	if !strings.Contains(out, "# configuration OK") || !strings.Contains(out, "upstream:") {
		t.Errorf("effective configuration not printed:\n%s", out)
	}
}

func TestCheckConfig_ThreeMistakesExit2(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(file, []byte(`
listen:
  addr: nonsense
accounts:
  - name: helpdesk
    tenant: contoso.com
    client_id: x
    flow: password
    senders: ["*@contoso.com"]
`), 0o600)
	_, err := run(t, "check-config", "--config", file)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 2 {
		t.Fatalf("want exit code 2, got %v", err)
	}
	for _, want := range []string{"3 problem(s)", "listen.addr:", "accounts[0].flow:", "accounts[0].mailbox: missing — the mailbox address the relay signs in as"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestCheckConfig_MasksSecrets(t *testing.T) {
	t.Setenv("OAUTHRELAY_ADMIN_TOKEN", "super-secret-admin-token")
	t.Setenv("HELPDESK_CLIENT_SECRET", "super-secret-client")
	out, err := run(t, "check-config", "--config", "../../configs/oauthrelay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "super-secret") || !strings.Contains(out, "******") {
		t.Errorf("secrets not masked:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "oauthrelay ") {
		t.Fatalf("%q %v", out, err)
	}
}

func TestDemo_RunsEndToEnd(t *testing.T) {
	out, err := run(t, "demo")
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"connected", "queued as", "delivered upstream", "demo OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestQueueDump_ReadsSpoolOffline(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.Open(queue.Options{Dir: dir, Deliverer: queue.DelivererFunc(func(context.Context, *queue.Delivery) queue.Result {
		return queue.Result{PauseAccount: "x"}
	})})
	if err != nil {
		t.Fatal(err)
	}
	q.Pause("helpdesk", "offline test")
	id, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@contoso.com", To: []string{"b@example.com"}, Account: "helpdesk"}, strings.NewReader("Subject: hi\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	q.Close(context.Background())

	out, err := run(t, "queue", "dump", "--spool", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	var m struct {
		SpoolState string `json:"spool_state"`
		ID         string `json:"id"`
		Account    string `json:"account"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.ID != id || m.SpoolState != "live" || m.Account != "helpdesk" {
		t.Fatalf("dump printed %q (%v)", out, err)
	}
	out, err = run(t, "queue", "dump", "--spool", dir, "--body", id)
	if err != nil || out != "Subject: hi\r\n\r\nbody\r\n" {
		t.Fatalf("body %q %v", out, err)
	}
	if _, err := run(t, "queue", "dump", "--spool", t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a spool") {
		t.Fatalf("an empty folder must be refused clearly: %v", err)
	}
}

func TestConnectOneShot_NeedsThePrintedKey(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("connect flow")) })
	h := keyedConnect(inner, "s3cret")
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/connect/helpdesk", 403},
		{"/connect/helpdesk?key=wrong", 403},
		{"/connect/helpdesk?key=s3cret", 200},
		{"/oauth/callback?state=x", 200}, // guarded by its single-use state instead
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != tc.code {
			t.Errorf("%s: %d, want %d", tc.path, rec.Code, tc.code)
		}
	}
}

// connect, with no relay running, refuses a configuration it cannot sign
// in with and names the key (its problems once printed as "  : ").
func TestConnect_OfflineNamesTheProblem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "oauthrelay.yaml")
	os.WriteFile(file, []byte(`
admin:
  addr: 127.0.0.1:1
spool:
  dir: `+filepath.Join(dir, "spool")+`
keysafe:
  path: `+filepath.Join(dir, "keysafe.bin")+`
accounts:
  - name: gmail
    provider: google
    client_id: x.apps.googleusercontent.com
    client_secret: ${SURELY_UNSET_SECRET_FOR_TEST}
    mailbox: a@example.com
    senders: ["*@example.com"]
`), 0o600)
	_, err := run(t, "connect", "gmail", "--config", file)
	if err == nil || !strings.Contains(err.Error(), "accounts[0].client_secret") {
		t.Fatalf("connect: %v", err)
	}
}
