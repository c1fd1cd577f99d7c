package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// api calls the admin API with token and returns status and body.
func api(t *testing.T, h *harness, method, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+h.relay.AdminAddr()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdmin_APIRequiresTokenAndRateLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	for _, path := range []string{"/api/status", "/api/queue", "/api/accounts", "/metrics"} {
		if code, _ := api(t, h, "GET", path, ""); code != 401 {
			t.Errorf("%s without token: %d, want 401", path, code)
		}
	}
	// A generated token was written beside the keysafe (no admin.token set).
	if len(h.relay.AdminToken) < 16 {
		t.Fatal("no admin token generated")
	}
	codes := map[int]int{}
	for range 10 {
		code, _ := api(t, h, "GET", "/api/status", "wrong-token-0123456789")
		codes[code]++
	}
	if codes[401] == 0 || codes[429] == 0 {
		t.Errorf("wrong tokens got %v: want 401 first, then 429", codes)
	}
	if code, _ := api(t, h, "GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz needs no token: %d", code)
	}
	code, body := api(t, h, "GET", "/readyz", "")
	if code != 200 || !strings.Contains(body, `"ready": true`) || !strings.Contains(body, "helpdesk: not_connected") {
		t.Errorf("/readyz %d %s", code, body)
	}
}

func TestAdmin_APIEndpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Delivery.Retry = []time.Duration{time.Hour} }, daemon.Hooks{})
	tok := h.relay.AdminToken
	h.connect()
	h.fake.SMTP.FailNext(fakem365.StageData, fakem365.ReplyTempFailure)
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "deferred", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgDeferred })
	failedReply, _ := send(h.relay.SMTPAddr(), "app@contoso.test", []string{"bob@example.com"}, message(2, "app@contoso.test", "bob@example.com", ""), nil)
	failedID := queueID(t, failedReply)
	waitFor(t, "failed", 10*time.Second, func() bool { return messageState(h.relay, failedID) == queue.MsgFailed })

	code, body := api(t, h, "GET", "/api/status", tok)
	var st struct {
		Accounts []struct{ Account, State string }
		Queue    queue.Stats
	}
	if json.Unmarshal([]byte(body), &st); code != 200 || len(st.Accounts) != 1 || st.Accounts[0].State != "connected" || st.Queue.Messages != 2 {
		t.Errorf("status %d %s", code, body)
	}
	if code, body := api(t, h, "GET", "/api/accounts", tok); code != 200 || !strings.Contains(body, `"mailbox": "helpdesk@contoso.test"`) || strings.Contains(body, "fake-rt-") {
		t.Errorf("accounts %d %s", code, body)
	}
	code, body = api(t, h, "GET", "/api/queue?state=deferred&account=helpdesk", tok)
	if code != 200 || !strings.Contains(body, id) || strings.Contains(body, failedID) {
		t.Errorf("list %d %s", code, body)
	}
	if code, body := api(t, h, "GET", "/api/queue?state=bogus", tok); code != 400 || !strings.Contains(body, "state must be one of") {
		t.Errorf("bad state: %d %s", code, body)
	}
	if code, body := api(t, h, "GET", "/api/queue/"+id, tok); code != 200 || !strings.Contains(body, `"code": 451`) {
		t.Errorf("get %d %s", code, body)
	}
	for _, call := range []struct{ method, path string }{
		{"GET", "/api/queue/00000000000000000000"},
		{"POST", "/api/queue/00000000000000000000/retry"},
		{"DELETE", "/api/queue/00000000000000000000"},
		{"POST", "/api/failed/00000000000000000000/requeue"},
	} {
		code, body := api(t, h, call.method, call.path, tok)
		if code != 404 || !strings.Contains(body, "no such message") {
			t.Errorf("%s %s: %d %s", call.method, call.path, code, body)
		}
	}
	if code, _ := api(t, h, "POST", "/api/queue/"+id+"/retry", tok); code != 200 {
		t.Errorf("retry %d", code)
	}
	h.fake.SMTP.WaitMessages(2, 10*time.Second) // the DSN and the retried message
	waitFor(t, "retried message delivered", 10*time.Second, func() bool { return messageState(h.relay, id) == "" })
	if code, body := api(t, h, "POST", "/api/queue/flush", tok); code != 200 || !strings.Contains(body, "scheduled_now") {
		t.Errorf("flush %d %s", code, body)
	}
	h.fake.SMTP.SetSendAsCheck(false)
	code, body = api(t, h, "POST", "/api/failed/"+failedID+"/requeue", tok)
	if code != 200 || !strings.Contains(body, `"from": "`+failedID+`"`) {
		t.Fatalf("requeue %d %s", code, body)
	}
	got := byTestID(h.fake.SMTP.WaitMessages(3, 10*time.Second))
	if _, ok := got["2"]; !ok {
		t.Error("requeued message not delivered")
	}
	h.fake.SMTP.SetRefuse(fakem365.ReplyTempFailure)
	reply, _ = send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(3, mailbox, "bob@example.com", ""), nil)
	delID := queueID(t, reply)
	waitFor(t, "deferred", 10*time.Second, func() bool { return messageState(h.relay, delID) == queue.MsgDeferred })
	if code, _ := api(t, h, "DELETE", "/api/queue/"+delID, tok); code != 200 || messageState(h.relay, delID) != "" {
		t.Errorf("delete %d", code)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestAdmin_PagesNeedLoginAndCSRF(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) { c.Admin.Token = "a-configured-admin-token" }, daemon.Hooks{})
	base := "http://" + h.relay.AdminAddr()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := noFollow.Get(base + "/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("status page without login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = noFollow.Get(base + "/connect/helpdesk")
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("connect without login: %d", resp.StatusCode)
	}
	resp, _ = noFollow.PostForm(base+"/login", url.Values{"token": {"nope"}})
	if resp.StatusCode != 401 {
		t.Errorf("wrong token at login: %d", resp.StatusCode)
	}
	browser := h.browser()
	resp, err := browser.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "not connected") || !strings.Contains(string(page), `href="/connect/helpdesk"`) {
		t.Errorf("status page lacks the account:\n%s", page)
	}
	var cookieOK bool
	for _, c := range browser.Jar.Cookies(resp.Request.URL) {
		cookieOK = cookieOK || c.Name == "oauthrelay_session"
	}
	if !cookieOK {
		t.Error("no session cookie")
	}
	m := csrfField.FindSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token in the page's forms")
	}
	resp, _ = browser.PostForm(base+"/ui/queue/flush", url.Values{"csrf": {"forged"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("forged CSRF: %d, want 403", resp.StatusCode)
	}
	resp, _ = browser.PostForm(base+"/ui/queue/flush", url.Values{})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("missing CSRF: %d, want 403", resp.StatusCode)
	}
	resp, _ = browser.PostForm(base+"/ui/queue/flush", url.Values{"csrf": {string(m[1])}})
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "will be tried now") {
		t.Errorf("flush with CSRF: %d", resp.StatusCode)
	}
	// The login cookie must not work as an API credential (no CSRF there).
	req, _ := http.NewRequest("POST", base+"/api/queue/flush", nil)
	resp, _ = browser.Do(req)
	if resp.StatusCode != 401 {
		t.Errorf("API with only a session cookie: %d, want 401", resp.StatusCode)
	}
}

func TestMetrics_ScriptedRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	h.connect()
	h.fake.SMTP.FailNext(fakem365.StageData, fakem365.ReplyTempFailure)
	for i := range 3 {
		if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(i, mailbox, "bob@example.com", ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	send(h.relay.SMTPAddr(), "app@contoso.test", []string{"bob@example.com"}, message(9, "app@contoso.test", "bob@example.com", ""), nil) // SendAsDenied → bounce
	send(h.relay.SMTPAddr(), "x@fabrikam.test", []string{"bob@example.com"}, "x\r\n", nil)                                                // unrouted
	h.fake.SMTP.WaitMessages(4, 15*time.Second)                                                                                           // 3 + the DSN
	waitFor(t, "queue settled", 10*time.Second, func() bool { st := h.relay.Queue.Stats(); return st.ByState[queue.MsgFailed] == 1 && st.Messages == 1 })

	m := h.relay.Metrics
	want := map[string]float64{
		`oauthrelay_messages_accepted_total{account="helpdesk"}`:               4,
		`oauthrelay_messages_delivered_total{account="helpdesk"}`:              3, // the DSN counts in bounced and upstream_messages
		`oauthrelay_messages_deferred_total{account="helpdesk"}`:               1,
		`oauthrelay_messages_bounced_total{account="helpdesk"}`:                1,
		`oauthrelay_smtp_rejections_total{reason="unrouted_sender"}`:           1,
		`oauthrelay_upstream_replies_total{class="4xx",enhanced="4.7.500"}`:    1,
		`oauthrelay_upstream_replies_total{class="5xx",enhanced="5.2.252"}`:    1,
		`oauthrelay_token_refreshes_total{account="helpdesk",result="ok"}`:     0, // the Connect grant came with a token
		`oauthrelay_queue_messages{account="helpdesk",state="failed"}`:         1,
		`oauthrelay_account_state{account="helpdesk",state="connected"}`:       1,
		`oauthrelay_account_state{account="helpdesk",state="needs_reconnect"}`: 0,
		`oauthrelay_upstream_messages_total{account="helpdesk"}`:               4,
		`oauthrelay_smtp_sessions_total`:                                       5,
		`oauthrelay_queue_messages{account="helpdesk",state="deferred"}`:       0,
	}
	text := scrape(t, h)
	for series, v := range want {
		got, ok := text[series]
		if !ok && v == 0 {
			continue
		}
		if got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	conns := text[`oauthrelay_upstream_connections_total{account="helpdesk"}`]
	if conns < 1 || conns > 4 {
		t.Errorf("upstream connections %v for 5 upstream messages", conns)
	}
	if lb := text["oauthrelay_spool_log_bytes"]; lb < 100 {
		t.Errorf("oauthrelay_spool_log_bytes = %v after 5 messages", lb)
	}
	if n := testutil.CollectAndCount(m.Registry(), "oauthrelay_delivery_latency_seconds"); n != 1 {
		t.Errorf("latency histogram missing")
	}
	if text[`oauthrelay_access_token_expiry_timestamp_seconds{account="helpdesk"}`] < float64(time.Now().Unix()) {
		t.Error("access-token expiry gauge not set")
	}
	for s := range text {
		if strings.Contains(s, "fake-") {
			t.Errorf("a secret in a metric label: %s", s)
		}
	}
}

// scrape reads /metrics with the admin token into series -> value.
func scrape(t *testing.T, h *harness) map[string]float64 {
	t.Helper()
	code, body := api(t, h, "GET", "/metrics", h.relay.AdminToken)
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		json.Unmarshal([]byte(line[i+1:]), &v)
		out[line[:i]] = v
	}
	return out
}
