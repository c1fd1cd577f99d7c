package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// What cron, PHP's mail() (sendmail_path = "/usr/sbin/sendmail -t -i") and
// mailx do: pipe a message to sendmail. Here through the binary installed
// as "sendmail" (a symlink), against a running relay.
func TestCLI_SendmailAsCronAndPHPUseIt(t *testing.T) {
	t.Parallel()
	fake, c, file := processConfig(t)
	startServe(t, file, c.Listen.Addr)
	dir := t.TempDir()
	sendmail := filepath.Join(dir, "sendmail")
	if err := os.Symlink(binary, sendmail); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) (string, int) {
		cmd := exec.Command(sendmail, append([]string{"-C", file}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	// PHP mail(): -t -i, recipients in the header, a Bcc to hide.
	php := "To: bob@example.com\nCc: carol@example.com\nBcc: dave@example.com\nFrom: " + mailbox + "\nSubject: from PHP\nX-Test-Id: 901\n\nHello from mail().\n.\nstill the body\n"
	if out, code := run(php, "-t", "-i"); code != 0 {
		t.Fatalf("sendmail -t -i: exit %d: %s", code, out)
	}
	// cron (Debian's): its own flags, recipient as an argument, sender by
	// -f (MAILFROM), a header without From, Date or Message-ID.
	cron := "Subject: Cron <root@host> backup\nX-Test-Id: 902\n\nbackup done\n"
	if out, code := run(cron, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-f", mailbox, "ops@example.com"); code != 0 {
		t.Fatalf("sendmail as cron: exit %d: %s", code, out)
	}
	// Without -i a lone "." ends the message, as in Sendmail.
	if out, code := run("Subject: x\nX-Test-Id: 903\n\nbefore\n.\nnot sent\n", "-f", mailbox, "ops@example.com"); code != 0 {
		t.Fatalf("sendmail without -i: exit %d: %s", code, out)
	}
	got := byTestID(fake.SMTP.WaitMessages(3, 10*time.Second))
	p := got["901"]
	if p.Data == nil {
		t.Fatalf("PHP's message not delivered: %v", got)
	}
	slices.Sort(p.To)
	if strings.Join(p.To, ",") != "bob@example.com,carol@example.com,dave@example.com" {
		t.Errorf("PHP's message went to %v", p.To)
	}
	if strings.Contains(string(p.Data), "Bcc:") || !strings.Contains(string(p.Data), "\r\n.\r\nstill the body") {
		t.Errorf("PHP's message as delivered:\n%s", p.Data)
	}
	if cr := got["902"]; cr.Data == nil || !strings.Contains(string(cr.Data), "Message-ID:") || !strings.Contains(string(cr.Data), "Date:") ||
		!strings.Contains(string(cr.Data), "From: \"CronDaemon\" <"+mailbox+">") {
		t.Errorf("cron's message as delivered:\n%s", cr.Data)
	}
	if d := got["903"]; d.Data == nil || strings.Contains(string(d.Data), "not sent") {
		t.Errorf("without -i, the lone dot did not end the message:\n%s", d.Data)
	}

	// Usage errors and an unroutable sender: sysexits codes, clear words.
	if out, code := run("Subject: x\n\nbody\n", "-t"); code != 64 || !strings.Contains(out, "no recipients") {
		t.Errorf("no recipients: exit %d: %s", code, out)
	}
	if out, code := run("Subject: x\n\nbody\n", "-f", "root", "ops@example.com"); code != 65 || !strings.Contains(out, "has no domain") {
		t.Errorf("sender without a domain: exit %d: %s", code, out)
	}
	if out, code := run("Subject: x\n\nbody\n", "-f", mailbox+">\r\nRCPT TO:<inj@evil.example", "ops@example.com"); code != 65 || !strings.Contains(out, "control character") {
		t.Errorf("a sender with CR LF: exit %d: %s", code, out)
	}
	if out, code := run("Subject: x\n\nbody\n", "-f", "app@not-routed.example", "ops@example.com"); code != 69 {
		t.Errorf("a sender no account routes: exit %d: %s", code, out)
	}
}

// The relay not running: nothing is accepted, exit 75 (EX_TEMPFAIL) with
// words saying so — the caller keeps the message.
func TestCLI_SendmailRelayDownIsTempFail(t *testing.T) {
	t.Parallel()
	_, c, file := processConfig(t) // configured, not started
	_ = c
	cmd := exec.Command(binary, "sendmail", "-C", file, "-f", mailbox, "ops@example.com")
	cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 || !strings.Contains(string(out), "not reachable") {
		t.Errorf("relay down: %v: %s", err, out)
	}
}

// `echo text | oauthrelay send …` sends the text, not the built-in message.
func TestCLI_SendReadsPipedStdin(t *testing.T) {
	t.Parallel()
	fake, c, file := processConfig(t)
	startServe(t, file, c.Listen.Addr)
	cmd := exec.Command(binary, "send", "--config", file, "--from", mailbox, "--to", "bob@example.com")
	cmd.Stdin = strings.NewReader("hello from a pipe\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	bad := exec.Command(binary, "send", "--config", file, "--from", mailbox, "--to", "bob@example.com", "--subject", "hi\r\nBcc: injected@evil.example")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "line break") {
		t.Errorf("send with a line break in --subject: %v %s", err, out)
	}
	msgs := fake.SMTP.WaitMessages(1, 10*time.Second)
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "hello from a pipe") || !strings.Contains(string(msgs[0].Data), "Subject: oauthrelay test message") {
		t.Errorf("delivered: %v", msgs)
	}
}

// With listen.auth.required, sendmail (which does not authenticate) is
// refused: exit 75 keeps the message with the caller (69 would tell cron to
// drop it), and the words say what to change.
func TestCLI_SendmailWhenAuthIsRequired(t *testing.T) {
	t.Parallel()
	_, c, file := processConfig(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("S3cret-pass"), bcrypt.MinCost)
	users := filepath.Join(filepath.Dir(file), "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	c.Listen.Auth.UsersFile, c.Listen.Auth.Required = users, true
	writeConfig(t, c, file)
	startServe(t, file, c.Listen.Addr)
	cmd := exec.Command(binary, "sendmail", "-C", file, "-f", mailbox, "ops@example.com")
	cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 || !strings.Contains(string(out), "listen.auth.required") {
		t.Errorf("sendmail with AUTH required: %v: %s", err, out)
	}
}
