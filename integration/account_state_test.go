package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay/admin"
	"github.com/oauthrelay/oauthrelay/tokens"
)

func alertHook(t *testing.T) (url string, alerts chan map[string]any) {
	alerts = make(chan map[string]any, 20)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a map[string]any
		json.NewDecoder(r.Body).Decode(&a)
		alerts <- a
	}))
	t.Cleanup(hook.Close)
	return hook.URL, alerts
}

// waitAlert waits for a webhook alert with the given state.
func waitAlert(t *testing.T, alerts chan map[string]any, state string) map[string]any {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case a := <-alerts:
			if a["state"] == state {
				return a
			}
		case <-deadline:
			t.Fatalf("no webhook alert with state %s", state)
			return nil
		}
	}
}

// Microsoft answers 535 5.7.139 (SMTP AUTH disabled for the mailbox): every
// view of the account says so — state, API, /readyz, metrics, webhook —
// retry and flush of its messages say why they wait, and after the admin
// fixes it on Microsoft's side, "try again" on the account releases the
// mail at once without a restart or reconnect.
func TestE2E_SMTPAuthDisabledShowsEverywhereAndTryAgainReleases(t *testing.T) {
	t.Parallel()
	hookURL, alerts := alertHook(t)
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.Retry = []time.Duration{time.Hour} // only a resume can deliver in time
		c.Delivery.MessagesPerConnection = 1
		c.Alert.WebhookURL = hookURL
	}, daemon.Hooks{})
	h.connect()
	waitAlert(t, alerts, "connected")
	h.fake.SMTP.SetAuthDisabled(mailbox, true)
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "message paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })

	tok := h.relay.AdminToken
	if st := h.relay.Tokens.State("helpdesk"); st.State != tokens.SMTPAuthDisabled || !strings.Contains(st.Explanation.Action, "Set-CASMailbox -Identity "+mailbox) {
		t.Errorf("account state %s, %q: want smtp_auth_disabled naming Set-CASMailbox", st.State, st.Explanation)
	}
	if _, body := api(t, h, "GET", "/api/accounts", tok); !strings.Contains(body, `"state": "smtp_auth_disabled"`) {
		t.Errorf("/api/accounts: %s", body)
	}
	if _, body := api(t, h, "GET", "/readyz", ""); !strings.Contains(body, "helpdesk: smtp_auth_disabled") {
		t.Errorf("/readyz: %s", body)
	}
	if _, body := api(t, h, "GET", "/metrics", tok); !strings.Contains(body, `oauthrelay_account_state{account="helpdesk",state="smtp_auth_disabled"} 1`) ||
		!strings.Contains(body, `oauthrelay_account_state{account="helpdesk",state="connected"} 0`) {
		t.Errorf("metrics do not show the state")
	}
	if a := waitAlert(t, alerts, "smtp_auth_disabled"); !strings.Contains(a["explanation"].(map[string]any)["action"].(string), "Set-CASMailbox") {
		t.Errorf("alert: %v", a)
	}
	// More mail for the account waits without touching Microsoft: no
	// connection, no login (repeated failed logins get a mailbox throttled).
	connsBefore := h.fake.SMTP.Connections()
	for i := 2; i <= 3; i++ {
		if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(i, mailbox, "bob@example.com", ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := h.fake.SMTP.Connections() - connsBefore; n != 0 {
		t.Errorf("%d connections to Microsoft for an account it refuses", n)
	}
	// Retrying the message cannot move it: say why, not "scheduled".
	if code, body := api(t, h, "POST", "/api/queue/"+id+"/retry", tok); code != http.StatusConflict || !strings.Contains(body, "paused") || !strings.Contains(body, "Try again") {
		t.Errorf("retry of a paused message: %d %s", code, body)
	}
	if _, body := api(t, h, "POST", "/api/queue/flush", tok); !strings.Contains(body, `"scheduled_now": 0`) || !strings.Contains(body, `"helpdesk": 3`) {
		t.Errorf("flush: %s", body)
	}
	// Still broken: try again says so and the mail stays held — no
	// delivery tries a login Microsoft refuses.
	authsBefore, _ := h.fake.SMTP.Auths()
	if code, body := api(t, h, "POST", "/api/accounts/helpdesk/retry", tok); code != http.StatusConflict || !strings.Contains(body, "still refused") {
		t.Errorf("try again while still refused: %d %s", code, body)
	}
	time.Sleep(300 * time.Millisecond)
	if after, _ := h.fake.SMTP.Auths(); after != authsBefore+1 {
		t.Errorf("try again while refused made %d logins upstream, want only its own one", after-authsBefore)
	}
	if m, _ := h.relay.Queue.Get(id); m.State != queue.MsgPaused {
		t.Errorf("message %s after a refused try again, want paused", m.State)
	}
	h.fake.SMTP.SetAuthDisabled(mailbox, false)
	code, body := api(t, h, "POST", "/api/accounts/helpdesk/retry", tok)
	if code != 200 || !strings.Contains(body, "resumed") {
		t.Fatalf("try again: %d %s", code, body)
	}
	if got := byTestID(h.fake.SMTP.WaitMessages(3, 10*time.Second)); got["1"].Data == nil || got["3"].Data == nil {
		t.Fatal("mail not released by try again")
	}
	if st := h.relay.Tokens.State("helpdesk"); st.State != tokens.Connected {
		t.Errorf("state after try again: %s", st.State)
	}
	waitAlert(t, alerts, "connected")
}

// Signing in as someone other than the mailbox is called out at once, and
// the 535 5.7.3 that follows names both users; signing in again as the
// mailbox releases the held mail at once (it once stayed held: connected →
// connected was no change).
func TestE2E_WrongUserIsCalledOutAndReconnectReleases(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.Retry = []time.Duration{time.Hour}
		c.Delivery.MessagesPerConnection = 1
	}, daemon.Hooks{})
	const other = "someone.else@contoso.test"
	upn, err := h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(dc tokens.DeviceCode) {
		h.fake.Entra.ApproveDevice(dc.UserCode, other)
	})
	if err != nil || upn != other {
		t.Fatalf("device sign-in: %q %v", upn, err)
	}
	if !strings.Contains(h.logs.String(), "signed in as "+other+"; this account sends as "+mailbox) {
		t.Errorf("log does not warn about the wrong user")
	}
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "message paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })
	st := h.relay.Tokens.State("helpdesk")
	if st.State != tokens.SMTPAuthRefused || !strings.Contains(st.Explanation.Title, "signed in as "+other+" but the mailbox is "+mailbox) {
		t.Errorf("state %s %q", st.State, st.Explanation)
	}
	if m, _ := h.relay.Queue.Get(id); m.Attempts != 0 {
		t.Errorf("a paused message used %d attempts", m.Attempts)
	}
	if _, err := h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(dc tokens.DeviceCode) {
		h.fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	}); err != nil {
		t.Fatal(err)
	}
	if got := byTestID(h.fake.SMTP.WaitMessages(1, 10*time.Second)); got["1"].Data == nil {
		t.Fatal("mail not released by signing in as the mailbox")
	}
}

// The pre-flight check reports each step in words with the fix, changes
// nothing, and passes only when everything works.
func TestE2E_CheckAccount(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	tok := h.relay.AdminToken
	check := func() admin.CheckResult {
		t.Helper()
		code, body := api(t, h, "POST", "/api/accounts/helpdesk/test", tok)
		var res admin.CheckResult
		if code != 200 || json.Unmarshal([]byte(body), &res) != nil {
			t.Fatalf("test: %d %s", code, body)
		}
		return res
	}
	if res := check(); res.OK || len(res.Steps) != 1 || res.Steps[0].Step != "token" || !strings.Contains(res.Steps[0].Fix, "Connect") {
		t.Errorf("not connected: %+v", res)
	}
	h.connect()
	res := check()
	if !res.OK || len(res.Steps) != 4 {
		t.Fatalf("connected: %+v", res)
	}
	if !strings.Contains(res.Steps[1].Detail, "SMTP.Send") || !strings.Contains(res.Steps[2].Detail, "TLS") {
		t.Errorf("steps: %+v", res.Steps)
	}
	h.fake.SMTP.SetAuthDisabled(mailbox, true)
	res = check()
	if res.OK || res.Steps[3].Step != "login" || !strings.Contains(res.Steps[3].Fix, "Set-CASMailbox") {
		t.Errorf("auth disabled: %+v", res)
	}
	if st := h.relay.Tokens.State("helpdesk"); st.State != tokens.Connected {
		t.Errorf("a check changed the account's state to %s", st.State)
	}
	if n := len(h.fake.SMTP.Messages()); n != 0 {
		t.Errorf("a check sent %d messages", n)
	}
	if code, _ := api(t, h, "POST", "/api/accounts/nope/test", tok); code != 404 {
		t.Errorf("unknown account: %d", code)
	}
}

// A device_code account's Connect button runs the device flow on the page
// (the redirect URI is registered only for authorization_code accounts):
// it shows the code and link and reloads itself until the sign-in is done.
// The page's Test button shows the check's steps.
func TestAdmin_DeviceCodeAccountConnectsOnThePage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Accounts[0].Flow = configs.FlowDeviceCode }, daemon.Hooks{})
	base := "http://" + h.relay.AdminAddr()
	browser := h.browser()
	resp, err := browser.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(page), `href="/connect/helpdesk"`) || !strings.Contains(string(page), `action="/ui/accounts/helpdesk/device"`) {
		t.Fatalf("a device_code account offers the redirect flow:\n%s", page)
	}
	csrf := string(csrfField.FindSubmatch(page)[1])
	resp, err = browser.PostForm(base+"/ui/accounts/helpdesk/device", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`id="user-code"><strong>([^<]+)</strong>`).FindSubmatch(page)
	if m == nil || !strings.Contains(string(page), `http-equiv="refresh"`) {
		t.Fatalf("no code on the page:\n%s", page)
	}
	if err := h.fake.Entra.ApproveDevice(string(m[1]), mailbox); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the page to say connected", 10*time.Second, func() bool {
		resp, err := browser.Get(base + "/ui/accounts/helpdesk/device")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), `id="device-result">Connected`)
	})
	if st := h.relay.Tokens.State("helpdesk"); st.State != tokens.Connected {
		t.Errorf("state %s", st.State)
	}
	// Its Connect link (as the log, the webhook and `connect` print it)
	// shows a code too, never the redirect flow.
	resp, err = browser.Get(base + "/connect/helpdesk")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `id="user-code"`) || !strings.Contains(string(page), "as <strong>"+mailbox) {
		t.Errorf("a device_code account's Connect link:\n%s", page)
	}
	resp, err = browser.PostForm(base+"/ui/accounts/helpdesk/test", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "passed") || !strings.Contains(string(page), "XOAUTH2 login") {
		t.Errorf("test page:\n%s", page)
	}
}

// An account's protocols decide the scopes its sign-in asks for; a
// protocol added after the last sign-in says "reconnect to grant" it; and
// `oauthrelay token` (GET /api/accounts/{name}/token) hands a current
// access token to programs that speak XOAUTH2 themselves.
func TestE2E_ProtocolsScopesAndToken(t *testing.T) {
	t.Parallel()
	fake, c, file := processConfig(t) // connected beforehand for smtp only
	c.Accounts[0].Protocols = []string{"smtp", "imap"}
	writeConfig(t, c, file)
	startServe(t, file, c.Listen.Addr)
	out, err := exec.Command(binary, "accounts", "--config", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reconnect to grant IMAP") {
		t.Errorf("accounts after adding imap: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "token", "helpdesk", "--config", file).Output()
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	if g, ok := fake.Entra.CheckAccess(tok); !ok || g.UPN != mailbox {
		t.Errorf("token printed is not a valid access token for the mailbox: %q", tok)
	}
	// Sign in again: the new grant carries the IMAP scope, the notice goes.
	cmd := exec.Command(binary, "connect", "helpdesk", "--device", "--config", file)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	code := regexp.MustCompile(`enter the code (\S+),`).FindStringSubmatch(line)
	if code == nil {
		t.Fatalf("no device code in %q", line)
	}
	fake.Entra.ApproveDevice(code[1], mailbox)
	go io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command(binary, "accounts", "--config", file).CombinedOutput()
	if strings.Contains(string(out), "reconnect to grant") {
		t.Errorf("after signing in with imap the notice stays:\n%s", out)
	}
	out, _ = exec.Command(binary, "token", "helpdesk", "--config", file).Output()
	claims := strings.Split(strings.TrimSpace(string(out)), ".")
	if len(claims) != 3 {
		t.Fatalf("token %q is not a JWT", out)
	}
	b, _ := base64.RawURLEncoding.DecodeString(claims[1])
	if !strings.Contains(string(b), "IMAP.AccessAsUser.All") || !strings.Contains(string(b), "SMTP.Send") {
		t.Errorf("token claims %s lack the protocols' scopes", b)
	}
}
