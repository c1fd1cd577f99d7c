package integration

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// binary is the oauthrelay command built once for the tests that run it as
// a real process (crash, memory).
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oauthrelay-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "oauthrelay")
	build := exec.Command("go", "build", "-o", binary, "../cmd/oauthrelay")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building oauthrelay:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// go test caches this package's result by the files its tests look at,
// and the binary is built by a child process it cannot see: stating every
// Go file of the module (from a test: TestMain runs before go test starts
// watching) makes a change anywhere re-run the package instead of
// reporting a stale pass.
func TestModuleSourcesAreInputs(t *testing.T) {
	n := 0
	filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") {
			os.Stat(path)
			n++
		}
		return nil
	})
	if n < 50 {
		t.Errorf("found %d Go files under the module", n)
	}
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is `oauthrelay serve` running as its own process.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
}

// writeConfig writes c as a YAML file the serve command reads.
func writeConfig(t testing.TB, c *configs.Config, path string) {
	out, err := configs.Effective(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func startServe(t testing.TB, configFile, smtpAddr string) *process {
	t.Helper()
	p := &process{stderr: &syncBuffer{}}
	p.cmd = exec.Command(binary, "serve", "--config", configFile)
	p.cmd.Stderr = p.stderr
	p.cmd.Env = append(os.Environ(), "OAUTHRELAY_LOG_LEVEL=debug")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	waitFor(t, "serve to listen", 15*time.Second, func() bool {
		c, err := net.Dial("tcp", smtpAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// noSecrets fails if a token or code the fake issued is in the processes' logs.
func noSecrets(t testing.TB, fake *fakem365.M365, procs ...*process) {
	t.Helper()
	for _, p := range procs {
		logs := p.stderr.String()
		for _, s := range fake.Entra.Secrets() {
			if strings.Contains(logs, s) {
				t.Errorf("a secret reached serve's log: %.12s…", s)
			}
		}
	}
}

// processConfig starts a fake Microsoft 365 and writes a configuration for
// a serve process whose account was connected beforehand (the keysafe holds
// its refresh token). The fake stops when the test ends.
func processConfig(t testing.TB) (*fakem365.M365, *configs.Config, string) {
	fake, err := fakem365.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	c := baseConfig(t, fake, dir)
	c.Listen.Addr, c.Admin.Addr = freeAddr(t), freeAddr(t)
	c.Log.Level = "warn"
	m, err := daemon.OpenTokens(c, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ConnectDevice(context.Background(), "helpdesk", func(dc tokens.DeviceCode) {
		fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "oauthrelay.yaml")
	writeConfig(t, c, file)
	return fake, c, file
}

// sendMany sends n messages with `clients` persistent SMTP connections at
// once; any failed send fails the test.
func sendMany(t testing.TB, addr string, n, clients int, body func(i int) string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := smtp.Dial(addr)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			for i := c; i < n; i += clients {
				if _, err := sendOn(cl, mailbox, []string{"bob@example.com"}, body(i), nil); err != nil {
					errs <- fmt.Errorf("message %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// 6. Crash: kill -9 the relay with 300 messages queued and the upstream
// refusing; a new relay on the same spool delivers all 300.
func TestE2E_CrashLosesNothing(t *testing.T) {
	t.Parallel()
	fake, c, file := processConfig(t)
	fake.SMTP.SetRefuse(fakem365.ReplyTempFailure)

	first := startServe(t, file, c.Listen.Addr)
	const n = 300
	sendMany(t, c.Listen.Addr, n, 20, func(i int) string { return message(i, mailbox, "bob@example.com", "") })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.cmd.Wait()
	if got := len(fake.SMTP.Messages()); got != 0 {
		t.Fatalf("upstream accepted %d while refusing", got)
	}
	metas, _ := os.ReadDir(filepath.Join(c.Spool.Dir, "log"))
	t.Logf("after kill -9: %d log segments", len(metas))

	fake.SMTP.SetRefuse(nil)
	second := startServe(t, file, c.Listen.Addr)
	defer noSecrets(t, fake, first, second)
	got := byTestID(fake.SMTP.WaitMessages(n, 60*time.Second))
	if len(got) != n {
		t.Fatalf("after the crash %d of %d messages were delivered", len(got), n)
	}
	for i := range n {
		if _, ok := got[strconv.Itoa(i)]; !ok {
			t.Errorf("message %d lost", i)
		}
	}
	if dup := len(fake.SMTP.Messages()) - n; dup > 20 {
		t.Errorf("%d duplicates: more than the deliveries in flight at the crash", dup)
	}
}

// TestServe_SIGTERMStopsCleanly checks the documented shutdown: exit 0, and
// the queue resumes in the next process.
func TestServe_SIGTERMStopsCleanly(t *testing.T) {
	t.Parallel()
	fake, c, file := processConfig(t)
	fake.SMTP.SetRefuse(fakem365.ReplyTempFailure)
	p := startServe(t, file, c.Listen.Addr)
	sendMany(t, c.Listen.Addr, 5, 1, func(i int) string { return message(i, mailbox, "bob@example.com", "") })
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, p.stderr.String())
	}
	fake.SMTP.SetRefuse(nil)
	startServe(t, file, c.Listen.Addr)
	if got := len(byTestID(fake.SMTP.WaitMessages(5, 20*time.Second))); got != 5 {
		t.Fatalf("%d of 5 delivered after a clean restart", got)
	}
}

// rss reads a process's resident and peak resident memory in KiB.
func rss(t testing.TB, pid int) (cur, peak int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			switch f[0] {
			case "VmRSS:":
				cur, _ = strconv.Atoi(f[1])
			case "VmHWM:":
				peak, _ = strconv.Atoi(f[1])
			}
		}
	}
	return cur, peak
}

// BenchmarkServeMemory35MB measures `serve`'s resident memory idle and its
// peak while relaying one 35 MB message end to end.
//
//	go test ./integration -run '^$' -bench ServeMemory -benchtime 1x
func BenchmarkServeMemory35MB(b *testing.B) {
	fake, c, file := processConfig(b)
	p := startServe(b, file, c.Listen.Addr)
	time.Sleep(500 * time.Millisecond)
	idle, _ := rss(b, p.cmd.Process.Pid)
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 1) + "\r\n"
	var body bytes.Buffer
	body.WriteString(message(0, mailbox, "bob@example.com", ""))
	for body.Len() < 35_000_000 {
		body.WriteString(line)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := send(c.Listen.Addr, mailbox, []string{"bob@example.com"}, body.String(), nil); err != nil {
			b.Fatal(err)
		}
	}
	fake.SMTP.WaitMessages(b.N, 60*time.Second)
	b.StopTimer()
	_, peak := rss(b, p.cmd.Process.Pid)
	b.ReportMetric(float64(idle)/1024, "idle-RSS-MB")
	b.ReportMetric(float64(peak-idle)/1024, "peak-growth-MB")
}
