package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// The status page shows each account's state with what to do, the queue
// by state and account, waiting messages with Microsoft's last reply and
// its meaning, recent failures, and an outage.
func TestAdmin_StatusPageShowsStateAndMeaning(t *testing.T) {
	s := newTestServer(t, func(o *Options) {
		o.Explain = func(r queue.Reply, account, sender string) string { return "meaning of " + r.Enhanced }
		o.ListenerUp = func() error { return errors.New("listener stopped") }
	})
	refused := helpdeskState(tokens.SMTPAuthDisabled)
	refused.Explanation = tokens.Explanation{Code: "535 5.7.139", Title: "SMTP AUTH is disabled", Action: "run Set-CASMailbox"}
	s.a.states = []tokens.AccountState{refused,
		{Account: "alerts", Mailbox: "alerts@contoso.test", Flow: tokens.FlowClientCredentials, State: tokens.Connected}}
	msgs := testMessages()
	msgs = append(msgs, queue.Message{Meta: &queue.Meta{ID: "p1", Account: "helpdesk", From: "app@contoso.test",
		Recipients: []queue.Recipient{{Addr: "d@fabrikam.test", State: queue.StateQueued}}},
		State: queue.MsgPaused, PausedReason: "SMTP AUTH is disabled"})
	s.q.msgs = msgs
	s.q.stats = queue.Stats{Messages: 4, Bytes: 3 << 20, Oldest: time.Now().Add(-90 * time.Minute),
		ByState:      map[queue.MessageState]int{queue.MsgDeferred: 1, queue.MsgQueued: 1, queue.MsgPaused: 1, queue.MsgFailed: 1},
		ByAccount:    map[string]map[queue.MessageState]int{"helpdesk": {queue.MsgDeferred: 1, queue.MsgPaused: 1, queue.MsgFailed: 1}, "alerts": {queue.MsgQueued: 1}},
		UpstreamDown: "cannot connect to smtp.office365.com:587", UpstreamDownSince: time.Now().Add(-time.Minute), NextProbe: time.Now().Add(10 * time.Second)}

	c, csrf := s.login(t)
	w := s.page("GET", "/?msg=Done.", c, nil)
	page := w.Body.String()
	for _, want := range []string{
		`<div class="flash">Done.</div>`,
		`id="outage"`, "cannot connect to smtp.office365.com:587",
		`id="not-ready"`, "listener stopped",
		`data-state="smtp_auth_disabled">SMTP AUTH disabled`, "<code>535 5.7.139</code> SMTP AUTH is disabled", "run Set-CASMailbox",
		`id="connect-helpdesk"`, `action="/ui/accounts/helpdesk/device"`, `id="retry-helpdesk"`, `id="test-alerts"`,
		"3.0 MiB", "1.5h ago",
		"<code>451 4.7.500 Server busy</code>", "meaning of 4.7.500",
		"waiting: the account needs attention — SMTP AUTH is disabled", "waits for the account",
		"<code>554 5.2.252 SendAsDenied</code>", "meaning of 5.2.252", `action="/ui/failed/f1/requeue"`,
		`name="csrf" value="` + csrf + `"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	// A connected app-only account has neither Connect nor Try again.
	for _, unwanted := range []string{`id="connect-alerts"`, `id="retry-alerts"`} {
		if strings.Contains(page, unwanted) {
			t.Errorf("status page has %q", unwanted)
		}
	}
	// The flash is text, never markup.
	if w := s.page("GET", "/?msg="+url.QueryEscape("<script>x</script>"), c, nil); strings.Contains(w.Body.String(), "<script>x") {
		t.Error("the msg parameter is rendered as HTML")
	}
}

// Each button of the page does its job and comes back with a note.
func TestAdmin_PageButtons(t *testing.T) {
	check := func(_ context.Context, account string) CheckResult {
		return CheckResult{Account: account, Mailbox: account + "@contoso.test", Steps: []CheckStep{
			{Step: "login", Detail: "Microsoft refused the login (535 5.7.139)", Fix: "Set-CASMailbox"}}}
	}
	paused := fmt.Errorf("%w: helpdesk needs reconnecting", queue.ErrPaused)
	tests := []struct {
		name     string
		target   string
		setup    func(*testServer)
		wantCall string // asked of the queue or the accounts
		wantTo   string // Location prefix; "" not a redirect
		wantNote string // in the note (msg) or the page
	}{
		{"retry", "/ui/queue/m1/retry", nil, "retry m1", "/?msg=", "Message m1 will be tried again now."},
		{"retry paused", "/ui/queue/m1/retry", func(s *testServer) { s.q.errs["m1"] = paused }, "retry m1", "/?msg=", "Failed: account paused: helpdesk needs reconnecting"},
		{"delete", "/ui/queue/m1/delete", nil, "delete m1", "/?msg=", "Message m1 deleted."},
		{"requeue", "/ui/failed/f1/requeue", nil, "requeue f1", "/?msg=", "Message f1 requeued as newf1."},
		{"requeue unknown", "/ui/failed/nosuch/requeue", nil, "requeue nosuch", "/?msg=", "Failed: no such message"},
		{"flush", "/ui/queue/flush", func(s *testServer) {
			s.q.flush = queue.FlushResult{Scheduled: 3, Paused: map[string]int{"helpdesk": 2}, Why: map[string]string{"helpdesk": "needs reconnecting"}}
		}, "flush", "/?msg=", "3 messages will be tried now. 2 of account helpdesk wait because it is paused: needs reconnecting."},
		{"account works again", "/ui/accounts/helpdesk/retry", nil, "retry helpdesk", "/?msg=", "Account helpdesk works again"},
		{"account still refused", "/ui/accounts/helpdesk/retry", func(s *testServer) {
			s.a.retryErr = errors.New("535 5.7.139")
			s.a.states[0].Explanation.Action = "run Set-CASMailbox"
		}, "retry helpdesk", "/?msg=", "Account helpdesk still does not work: 535 5.7.139 — run Set-CASMailbox"},
		{"test", "/ui/accounts/helpdesk/test", nil, "", "", "Set-CASMailbox"},
		{"device sign-in", "/ui/accounts/helpdesk/device", nil, "device helpdesk", "/ui/accounts/helpdesk/device", ""},
		{"device sign-in refused", "/ui/accounts/helpdesk/device", func(s *testServer) { s.a.deviceErr = errors.New("AADSTS7000218") },
			"device helpdesk", "/?msg=", "Could not start the sign-in for helpdesk: AADSTS7000218"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) { o.Check = check })
			s.q.msgs = testMessages()
			if tt.setup != nil {
				tt.setup(s)
			}
			c, csrf := s.login(t)
			w := s.page("POST", tt.target, c, url.Values{"csrf": {csrf}})
			calls := append(s.q.recorded(), s.a.recorded()...)
			calls = slices.DeleteFunc(calls, func(c string) bool { return strings.HasPrefix(c, "list ") }) // the status page
			if tt.wantCall != "" && !slices.Equal(calls, []string{tt.wantCall}) || tt.wantCall == "" && len(calls) != 0 {
				t.Errorf("asked %q, want %q", calls, tt.wantCall)
			}
			if tt.wantTo == "" {
				if w.Code != 200 || !strings.Contains(w.Body.String(), tt.wantNote) {
					t.Errorf("%d, page lacks %q", w.Code, tt.wantNote)
				}
				return
			}
			loc := w.Header().Get("Location")
			if w.Code != http.StatusSeeOther || !strings.HasPrefix(loc, tt.wantTo) {
				t.Fatalf("%d → %q, want 303 → %s…", w.Code, loc, tt.wantTo)
			}
			u, _ := url.Parse(loc)
			if note := u.Query().Get("msg"); !strings.Contains(note, tt.wantNote) {
				t.Errorf("note %q, want %q", note, tt.wantNote)
			}
		})
	}
}

func TestAdmin_DeviceSignInPage(t *testing.T) {
	s := newTestServer(t, nil)
	c, csrf := s.login(t)
	if w := s.page("GET", "/ui/accounts/helpdesk/device", c, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Errorf("device page before a start: %d → %q, want back to /", w.Code, w.Header().Get("Location"))
	}
	s.page("POST", "/ui/accounts/helpdesk/device", c, url.Values{"csrf": {csrf}})
	w := s.page("GET", "/ui/accounts/helpdesk/device", c, nil)
	page := w.Body.String()
	for _, want := range []string{`<meta http-equiv="refresh" content="3">`, "<strong>ABCD-EFGH</strong>", "https://microsoft.com/devicelogin"} {
		if !strings.Contains(page, want) {
			t.Errorf("device page lacks %q", want)
		}
	}
	s.a.mu.Lock()
	s.a.device["helpdesk"] = tokens.DeviceSignIn{Account: "helpdesk", Status: "connected", SignedInAs: "bob@contoso.test", Warning: "signed in as bob, not the mailbox"}
	s.a.mu.Unlock()
	page = s.page("GET", "/ui/accounts/helpdesk/device", c, nil).Body.String()
	if !strings.Contains(page, `id="device-result">Connected — but check who signed in`) || strings.Contains(page, "http-equiv") {
		t.Error("the connected page does not warn, or still reloads")
	}
}

func TestAdmin_AgoAndBytes(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "—"},
		{now.Add(-30 * time.Second), "30s ago"},
		{now.Add(-5 * time.Minute), "5m ago"},
		{now.Add(-3 * time.Hour), "3.0h ago"},
		{now.Add(-72 * time.Hour), "3.0 days ago"},
	} {
		if got := ago(tt.t); got != tt.want {
			t.Errorf("ago(now-%v) = %q, want %q", now.Sub(tt.t).Round(time.Second), got, tt.want)
		}
	}
	if got := ago(now.Add(time.Minute + 500*time.Millisecond)); !strings.HasPrefix(got, "in 1m") {
		t.Errorf("ago(a minute ahead) = %q", got)
	}
	for n, want := range map[int64]string{512: "512 B", 2048: "2.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// Each account's card says which provider, cloud and credential it uses,
// with a certificate's expiry, and warns about a certificate expiring soon.
func TestAdmin_StatusPageShowsCredentialAndCertificateExpiry(t *testing.T) {
	s := newTestServer(t, nil)
	exp := time.Date(2027, 1, 5, 12, 0, 0, 0, time.UTC)
	s.a.states = []tokens.AccountState{
		{Account: "alerts", Mailbox: "alerts@contoso.test", Flow: tokens.FlowClientCredentials, State: tokens.Connected,
			Provider: "microsoft", Cloud: "usgov", Credential: "certificate", CertificateExpiry: exp,
			CertificateWarning: "the client certificate expires on 2027-01-05 (in 12 days): make a new certificate"},
		{Account: "helpdesk", Mailbox: "helpdesk@contoso.test", Flow: tokens.FlowAuthorizationCode, State: tokens.Connected,
			Provider: "microsoft", Cloud: "global", Credential: "delegated sign-in"},
		{Account: "gmail", Mailbox: "ops@example.com", Flow: "service_account", State: tokens.Connected,
			Provider: "google", Credential: "service account"},
	}
	c, _ := s.login(t)
	page := s.page("GET", "/", c, nil).Body.String()
	for _, want := range []string{
		`id="credential-alerts">microsoft · usgov cloud · certificate (expires 2027-01-05)</div>`,
		`id="certificate-alerts"`, "the client certificate expires on 2027-01-05 (in 12 days)",
		`id="credential-helpdesk">microsoft · global cloud · delegated sign-in</div>`,
		`id="credential-gmail">google · service account</div>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(page, `id="certificate-helpdesk"`) {
		t.Error("a certificate warning on an account without a certificate")
	}
}
