package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
)

// findChromium returns Debian's chromium (or another Chrome) if installed.
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowser_ConnectFromStatusPage drives headless Chromium: log in, see
// the account "not connected", press Connect, sign in at the (fake,
// auto-approving) Microsoft page, come back to "connected", and see a test
// message delivered. The status page's screenshot is saved in the test's
// artifact directory (go test -artifacts keeps it).
func TestBrowser_ConnectFromStatusPage(t *testing.T) {
	chrome := findChromium()
	if chrome == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Chromium is not installed; .ci/run installs Debian's chromium package")
		}
		t.Skip("Chromium is not installed (apt-get install chromium); skipping the browser test outside CI")
	}
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Delivery.Retry = []time.Duration{time.Hour} }, daemon.Hooks{})
	base := "http://" + h.relay.AdminAddr()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(412, 1400), // a phone-sized viewport
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	state := func() string {
		t.Helper()
		attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#account-helpdesk .badge"), "data-state"))
		if err != nil {
			t.Fatalf("reading the account's state: %v", err)
		}
		return attr.Value
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), h.relay.AdminToken),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("account-helpdesk")),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	if got := state(); got != "not_connected" {
		t.Fatalf("before Connect the account shows %q, want not_connected", got)
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("connect-helpdesk")),
		chromedp.WaitVisible(chromedp.CSS("h1.ok")), // the callback's result page
	)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	result, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("a.button")), chromedp.WaitVisible(chromedp.ID("account-helpdesk"))); err != nil {
		t.Fatalf("back to the status page: %v", err)
	}
	if got := state(); got != "connected" {
		t.Fatalf("after Connect the account shows %q (result page: %s)", got, result)
	}

	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	if len(h.fake.SMTP.WaitMessages(1, 10*time.Second)) != 1 {
		t.Fatal("test message not delivered after connecting in the browser")
	}

	// Give the page something to show: a refused message (with Microsoft's
	// reply explained) and one waiting for a retry.
	reply, err := send(h.relay.SMTPAddr(), "app@contoso.test", []string{"bob@example.com"}, message(2, "app@contoso.test", "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	refused := queueID(t, reply)
	waitFor(t, "SendAsDenied", 10*time.Second, func() bool { return messageState(h.relay, refused) == queue.MsgFailed })
	h.fake.SMTP.FailNext(fakem365.StageData, fakem365.ReplyTempFailure)
	send(h.relay.SMTPAddr(), mailbox, []string{"carol@example.com"}, message(3, mailbox, "carol@example.com", ""), nil)
	waitFor(t, "a failure and a deferral", 10*time.Second, func() bool {
		st := h.relay.Queue.Stats()
		return st.ByState[queue.MsgFailed] == 1 && st.Messages == 2
	})
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("account-helpdesk"))); err != nil {
		t.Fatal(err)
	}
	page, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	for _, want := range []string{"Recent failures", "5.2.252", "may not send as app@contoso.test", "Waiting for delivery"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.ArtifactDir(), "status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("status page screenshot: %s (%d bytes)", shot, len(png))
}
