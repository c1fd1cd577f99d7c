package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// End to end through the relay's IMAP and POP3 proxies with clients nobody
// here wrote: Python's imaplib and poplib, raw IMAP IDLE from Python, and
// curl's imap:// and pop3://.

const inboundUser = "app"

// newInboundHarness is newHarness with the IMAP and POP3 proxies on
// 127.0.0.1:0 pointing at the fake's, a local user "app" for the account,
// and the account connected with smtp, imap and pop3. It returns the local
// password.
func newInboundHarness(t testing.TB, mod func(*configs.Config)) (*harness, string) {
	t.Helper()
	return newInboundHarnessWith(t, bcrypt.DefaultCost, mod)
}

// newInboundHarnessCost is newInboundHarness with the local password hashed
// at a bcrypt cost (benchmarks).
func newInboundHarnessCost(t testing.TB, cost int) (*harness, string) {
	t.Helper()
	return newInboundHarnessWith(t, cost, nil)
}

func newInboundHarnessWith(t testing.TB, cost int, mod func(*configs.Config)) (*harness, string) {
	t.Helper()
	fake, err := fakem365.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	pw := "local-" + randHex(12)
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "inbound-users")
	if err := os.WriteFile(users, []byte(inboundUser+":"+string(hash)+":helpdesk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := baseConfig(t, fake, dir)
	c.Accounts[0].Protocols = []string{"smtp", "imap", "pop3"}
	c.Inbound.UsersFile = users
	c.Inbound.IMAP.Addr, c.Inbound.POP3.Addr = "127.0.0.1:0", "127.0.0.1:0"
	c.Inbound.IMAP.Upstream, c.Inbound.POP3.Upstream = fake.IMAP.Addr, fake.POP3.Addr
	if mod != nil {
		mod(c)
	}
	if ps := configs.Validate(c); len(ps) > 0 {
		t.Fatal(ps)
	}
	h := &harness{t: t, fake: fake, cfg: c, dir: dir, logs: &syncBuffer{}, localPasswords: []string{pw}}
	h.start(daemon.Hooks{})
	t.Cleanup(func() { h.checkLogsHoldNoSecret() })
	h.connect()
	return h, pw
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pyClient is the Python helper: imaplib / poplib / a raw socket for IDLE.
const pyClient = `
import imaplib, poplib, socket, sys, os
mode, host, port, user, pw = sys.argv[1:6]
port = int(port)
def out(s):
    sys.stdout.write(s + "\n"); sys.stdout.flush()
try:
    if mode == "imap-fetch":
        d = sys.argv[6]
        c = imaplib.IMAP4(host, port)
        c.login(user, pw)
        typ, _ = c.select("INBOX", readonly=True)
        typ, data = c.search(None, "ALL")
        for n in data[0].split():
            typ, resp = c.fetch(n, "(BODY.PEEK[])")
            open(os.path.join(d, n.decode()), "wb").write(resp[0][1])
        c.logout()
        out("OK")
    elif mode == "pop3-retr":
        d = sys.argv[6]
        c = poplib.POP3(host, port)
        c.user(user)
        c.pass_(pw)
        count, _ = c.stat()
        for n in range(1, count + 1):
            resp, lines, _ = c.retr(n)
            open(os.path.join(d, str(n)), "wb").write(b"".join(l + b"\r\n" for l in lines))
        c.quit()
        out("OK")
    elif mode == "imap-login":
        c = imaplib.IMAP4(host, port)
        c.login(user, pw)
        out("OK")
    elif mode == "pop3-login":
        c = poplib.POP3(host, port)
        c.user(user)
        c.pass_(pw)
        out("OK")
    elif mode == "imap-idle":
        s = socket.create_connection((host, port), timeout=60)
        f = s.makefile("rb")
        f.readline()
        def cmd(tag, line):
            s.sendall((tag + " " + line + "\r\n").encode())
            while True:
                l = f.readline().decode()
                if not l:
                    raise Exception("closed")
                if l.startswith(tag + " "):
                    if not l.startswith(tag + " OK"):
                        raise Exception(l.strip())
                    return
        cmd("a", "LOGIN %s %s" % (user, pw))
        cmd("b", "SELECT INBOX")
        s.sendall(b"c IDLE\r\n")
        while not f.readline().startswith(b"+"):
            pass
        out("IDLING")
        while True:
            l = f.readline().decode()
            if not l:
                raise Exception("closed")
            if l.rstrip().endswith("EXISTS"):
                out("GOT " + l.strip())
                break
        s.sendall(b"DONE\r\n")
        out("OK")
except Exception as e:
    out("ERR " + str(e))
    sys.exit(1)
`

// python runs the helper and returns its output (trimmed).
func python(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd, _ := pythonCmd(t, args...)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

func pythonCmd(t testing.TB, args ...string) (*exec.Cmd, context.CancelFunc) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	script := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(script, []byte(pyClient), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, "python3", append([]string{script}, args...)...), cancel
}

func hostPort(t testing.TB, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	return addr[:i], addr[i+1:]
}

// fetchAll fetches every INBOX message through the relay with imaplib
// (proto "imap") or poplib ("pop3").
func fetchAll(t testing.TB, h *harness, proto, pw string) [][]byte {
	t.Helper()
	addr := h.relay.IMAPAddr()
	mode := "imap-fetch"
	if proto == "pop3" {
		addr, mode = h.relay.POP3Addr(), "pop3-retr"
	}
	host, port := hostPort(t, addr)
	d := t.TempDir()
	if out, err := python(t, mode, host, port, inboundUser, pw, d); err != nil || out != "OK" {
		t.Fatalf("%s: %v %s", mode, err, out)
	}
	var got [][]byte
	for i := 1; ; i++ {
		b, err := os.ReadFile(filepath.Join(d, fmt.Sprint(i)))
		if err != nil {
			return got
		}
		got = append(got, b)
	}
}

func curlHas(t testing.TB, proto string) bool {
	out, err := exec.Command("curl", "--version").Output()
	if err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "Protocols:") && strings.Contains(l+" ", " "+proto+" ") {
				return true
			}
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("curl without %s in CI", proto)
	}
	return false
}

// (1) A message sent through the relay's SMTP to the mailbox arrives, byte
// for byte as the mailbox holds it, through the relay's IMAP (imaplib,
// curl) and POP3 (poplib, curl).
func TestInbound_SentMailReadByteExact(t *testing.T) {
	t.Parallel()
	h, pw := newInboundHarness(t, nil)
	body := message(1, mailbox, mailbox, "line two\r\n.starts with a dot\r\n")
	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{mailbox}, body, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery to the INBOX", 10*time.Second, func() bool { return len(h.fake.Mail.Messages(mailbox)) == 1 })
	want := h.fake.Mail.Messages(mailbox)[0]
	if !bytes.Equal(stripReceived(want), []byte(body)) {
		t.Fatalf("INBOX holds %q, sent %q", want, body)
	}
	for _, proto := range []string{"imap", "pop3"} {
		got := fetchAll(t, h, proto, pw)
		if len(got) != 1 || !bytes.Equal(got[0], want) {
			t.Errorf("%s (python): %d messages, first %q; want %q", proto, len(got), got, want)
		}
	}
	for _, c := range []struct{ proto, addr, path string }{
		{"imap", h.relay.IMAPAddr(), "/INBOX;MAILINDEX=1"},
		{"pop3", h.relay.POP3Addr(), "/1"},
	} {
		if !curlHas(t, c.proto) {
			t.Logf("curl lacks %s: skipped", c.proto)
			continue
		}
		out, err := exec.Command("curl", "-sS", "--max-time", "30", "-u", inboundUser+":"+pw, c.proto+"://"+c.addr+c.path).Output()
		if err != nil || !bytes.Equal(out, want) {
			t.Errorf("curl %s: %v %q; want %q", c.proto, err, out, want)
		}
	}
	if a, ok := h.fake.IMAP.Auths(); ok < 1 || a != ok {
		t.Errorf("fake IMAP auths %d, ok %d", a, ok)
	}
	// (6) The sessions are logged, without the local password (checked at
	// cleanup with every token the fake issued).
	waitFor(t, "the session lines", 5*time.Second, func() bool {
		return strings.Count(h.logs.String(), "inbound: session ended") >= 2
	})
}

// (2) A 10 MB message (put in the INBOX directly) is read byte for byte
// through both proxies.
func TestInbound_LargeMessageByteExact(t *testing.T) {
	t.Parallel()
	h, pw := newInboundHarness(t, nil)
	var b bytes.Buffer
	b.WriteString(message(2, mailbox, mailbox, ""))
	line := make([]byte, 57)
	for b.Len() < 10<<20 {
		rand.Read(line)
		fmt.Fprintf(&b, "%x\r\n", line) // 114 hex digits a line
		if b.Len()%7 == 0 {
			b.WriteString(".dot-stuffed on the wire\r\n")
		}
	}
	big := b.Bytes()
	h.fake.Deliver(mailbox, big)
	for _, proto := range []string{"imap", "pop3"} {
		got := fetchAll(t, h, proto, pw)
		if len(got) != 1 || !bytes.Equal(got[0], big) {
			n := 0
			if len(got) > 0 {
				n = len(got[0])
			}
			t.Errorf("%s: %d messages, first %d bytes; want %d bytes byte-exact", proto, len(got), n, len(big))
		}
	}
}

// (3) A client in IDLE through the proxy sees a new message within seconds.
func TestInbound_IdleSeesNewMail(t *testing.T) {
	t.Parallel()
	h, pw := newInboundHarness(t, nil)
	host, port := hostPort(t, h.relay.IMAPAddr())
	cmd, _ := pythonCmd(t, "imap-idle", host, port, inboundUser, pw)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() }) // never hang the suite
	defer stop.Stop()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "IDLING" {
		t.Fatalf("helper: %q", lines.Text())
	}
	// The fake's IMAP (go-imap v2) answers "+ idling" before it starts
	// watching the mailbox; let the watch start (see fakem365's IDLE test).
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{mailbox}, message(3, mailbox, mailbox, ""), nil); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "GOT * 1 EXISTS") {
		t.Fatalf("helper: %q", lines.Text())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("EXISTS after %v", d)
	}
	if err := cmd.Wait(); err != nil {
		t.Error(err)
	}
}

// (4) A wrong local password is refused as a wrong password, and nothing
// reaches Microsoft.
func TestInbound_WrongPasswordNeverGoesUpstream(t *testing.T) {
	t.Parallel()
	h, _ := newInboundHarness(t, nil)
	host, iport := hostPort(t, h.relay.IMAPAddr())
	_, pport := hostPort(t, h.relay.POP3Addr())
	if out, _ := python(t, "imap-login", host, iport, inboundUser, "wrong-password"); !strings.Contains(out, "[AUTHENTICATIONFAILED]") {
		t.Errorf("imap: %s", out)
	}
	if out, _ := python(t, "pop3-login", host, pport, inboundUser, "wrong-password"); !strings.Contains(out, "-ERR [AUTH]") {
		t.Errorf("pop3: %s", out)
	}
	if curlHas(t, "imap") {
		out, err := exec.Command("curl", "-sS", "--max-time", "30", "-u", inboundUser+":wrong-password", "imap://"+h.relay.IMAPAddr()+"/INBOX;MAILINDEX=1").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Login denied") {
			t.Errorf("curl imap: %v %s", err, out)
		}
	}
	if a, _ := h.fake.IMAP.Auths(); a != 0 {
		t.Errorf("fake IMAP saw %d logins", a)
	}
	if a, _ := h.fake.POP3.Auths(); a != 0 {
		t.Errorf("fake POP3 saw %d logins", a)
	}
}

// (5) Revoked tokens: a temporary refusal (never "wrong password"); after
// the account is connected again, logins work without a restart.
func TestInbound_RevokedThenReconnected(t *testing.T) {
	t.Parallel()
	h, pw := newInboundHarness(t, nil)
	host, iport := hostPort(t, h.relay.IMAPAddr())
	_, pport := hostPort(t, h.relay.POP3Addr())
	if out, err := python(t, "imap-login", host, iport, inboundUser, pw); err != nil || out != "OK" {
		t.Fatalf("imap before revoke: %v %s", err, out)
	}
	h.fake.Entra.RevokeAll()
	if out, _ := python(t, "imap-login", host, iport, inboundUser, pw); !strings.Contains(out, "[UNAVAILABLE]") {
		t.Errorf("imap after revoke: %s", out)
	}
	if out, _ := python(t, "pop3-login", host, pport, inboundUser, pw); !strings.Contains(out, "-ERR [SYS/TEMP]") {
		t.Errorf("pop3 after revoke: %s", out)
	}
	if _, err := h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(dc tokens.DeviceCode) {
		h.fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := python(t, "imap-login", host, iport, inboundUser, pw); err != nil || out != "OK" {
		t.Errorf("imap after reconnect: %v %s", err, out)
	}
	if out, err := python(t, "pop3-login", host, pport, inboundUser, pw); err != nil || out != "OK" {
		t.Errorf("pop3 after reconnect: %v %s", err, out)
	}
}

// A script that writes its commands and half-closes (printf … | nc -N)
// gets the whole 10 MB reply and the server's last line, over IMAP and
// POP3, every time — Microsoft's server is not told the client left.
func TestInbound_HalfClosingScriptGetsEverything(t *testing.T) {
	t.Parallel()
	h, pw := newInboundHarness(t, nil)
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 10<<20/64)
	h.fake.Deliver(mailbox, append([]byte(message(1, mailbox, mailbox, "")), big...))
	scripts := map[string]struct{ addr, cmds, last string }{
		"imap": {h.relay.IMAPAddr(), "a LOGIN " + inboundUser + " " + pw + "\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\nd LOGOUT\r\n", "d OK LOGOUT completed"},
		"pop3": {h.relay.POP3Addr(), "USER " + inboundUser + "\r\nPASS " + pw + "\r\nRETR 1\r\nQUIT\r\n", "+OK"},
	}
	for proto, s := range scripts {
		for i := range 5 {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			go func() {
				io.WriteString(c, s.cmds)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			c.Close()
			lines := strings.Split(strings.TrimRight(string(got), "\r\n"), "\r\n")
			if len(got) < len(big) || !strings.HasPrefix(lines[len(lines)-1], s.last) {
				t.Errorf("%s run %d: %d bytes (%v), last line %q", proto, i, len(got), err, lines[len(lines)-1])
			}
		}
	}
}

// /metrics shows the sessions open now per account and protocol, and when
// they end counts them and their bytes.
func TestInbound_Metrics(t *testing.T) {
	t.Parallel()
	h, pw := newInboundHarness(t, nil)
	x := dialIMAPProxy(t, h.relay.IMAPAddr())
	x.cmd(t, "a", "LOGIN "+inboundUser+" "+pw)
	x.cmd(t, "b", "SELECT INBOX")
	metric := func(series string) string {
		_, body := api(t, h, "GET", "/metrics", h.relay.AdminToken)
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, series+" "); ok {
				return v
			}
		}
		return ""
	}
	if v := metric(`oauthrelay_inbound_sessions_open{account="helpdesk",protocol="imap"}`); v != "1" {
		t.Errorf("sessions_open during the session = %q, want 1", v)
	}
	x.cmd(t, "z", "LOGOUT")
	x.c.Close()
	waitFor(t, "the session counted", 5*time.Second, func() bool {
		return metric(`oauthrelay_inbound_sessions_total{account="helpdesk",protocol="imap"}`) == "1"
	})
	if v := metric(`oauthrelay_inbound_sessions_open{account="helpdesk",protocol="imap"}`); v != "" && v != "0" {
		t.Errorf("sessions_open after the session = %q", v)
	}
	if v := metric(`oauthrelay_inbound_bytes_total{direction="out",protocol="imap"}`); v == "" || v == "0" {
		t.Errorf("bytes out = %q", v)
	}
}
