package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

func testMessages() []queue.Message {
	reply := &queue.Reply{Code: 451, Enhanced: "4.7.500", Text: "Server busy"}
	return []queue.Message{
		{Meta: &queue.Meta{ID: "m1", Account: "helpdesk", From: "app@contoso.test", Attempts: 1,
			Recipients: []queue.Recipient{{Addr: "a@fabrikam.test", State: queue.StateDeferred, Last: reply}, {Addr: "b@fabrikam.test", State: queue.StateQueued}}},
			State: queue.MsgDeferred},
		{Meta: &queue.Meta{ID: "m2", Account: "alerts", From: "cron@contoso.test"}, State: queue.MsgQueued},
		{Meta: &queue.Meta{ID: "f1", Account: "helpdesk", From: "app@contoso.test", Finished: time.Now(),
			Recipients: []queue.Recipient{{Addr: "c@fabrikam.test", State: queue.StateFailed, Last: &queue.Reply{Code: 554, Enhanced: "5.2.252", Text: "SendAsDenied"}}}},
			State: queue.MsgFailed},
	}
}

func ids(msgs []queue.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

func TestAdmin_APIQueueList(t *testing.T) {
	tests := []struct {
		query    string
		wantCode int
		wantCall string // what List was asked; "" not called
		wantIDs  []string
	}{
		{"", 200, "list /", []string{"m1", "m2", "f1"}},
		{"?state=deferred", 200, "list deferred/", []string{"m1"}},
		{"?state=failed&account=helpdesk", 200, "list failed/helpdesk", []string{"f1"}},
		{"?account=alerts", 200, "list /alerts", []string{"m2"}},
		{"?state=paused", 200, "list paused/", nil}, // none: [] not null
		{"?state=bogus", 400, "", nil},
		{"?state=DEFERRED", 400, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			s := newTestServer(t, nil)
			s.q.msgs = testMessages()
			w := s.api("GET", "/api/queue"+tt.query, testToken)
			if w.Code != tt.wantCode {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tt.wantCode)
			}
			calls := s.q.recorded()
			if tt.wantCall == "" {
				if len(calls) != 0 {
					t.Errorf("queue asked %q for a bad request", calls)
				}
				if e := decode[map[string]string](t, w)["error"]; !strings.Contains(e, "queued") || !strings.Contains(e, "failed") {
					t.Errorf("error %q does not list the states", e)
				}
				return
			}
			if !slices.Equal(calls, []string{tt.wantCall}) {
				t.Errorf("queue asked %q, want %q", calls, tt.wantCall)
			}
			if strings.TrimSpace(w.Body.String()) == "null" {
				t.Error("an empty list is null, want []")
			}
			if got := ids(decode[[]queue.Message](t, w)); !slices.Equal(got, tt.wantIDs) {
				t.Errorf("ids %q, want %q", got, tt.wantIDs)
			}
		})
	}
}

func TestAdmin_APIQueueGetWithMeanings(t *testing.T) {
	s := newTestServer(t, func(o *Options) {
		o.Explain = func(r queue.Reply, account, sender string) string {
			return fmt.Sprintf("%s means busy (%s, %s)", r.Enhanced, account, sender)
		}
	})
	s.q.msgs = testMessages()
	if w := s.api("GET", "/api/queue/nosuch", testToken); w.Code != 404 || decode[map[string]string](t, w)["error"] != queue.ErrNotFound.Error() {
		t.Errorf("unknown id: %d %s", w.Code, w.Body)
	}
	w := s.api("GET", "/api/queue/m1", testToken)
	if w.Code != 200 {
		t.Fatalf("GET m1: %d %s", w.Code, w.Body)
	}
	d := decode[MessageDetail](t, w)
	if d.ID != "m1" || d.State != queue.MsgDeferred || len(d.Recipients) != 2 {
		t.Errorf("message %+v", d.Message)
	}
	// Only a recipient with a reply gets a meaning.
	want := map[string]string{"a@fabrikam.test": "4.7.500 means busy (helpdesk, app@contoso.test)"}
	if !equalJSON(d.Meanings, want) {
		t.Errorf("meanings %q, want %q", d.Meanings, want)
	}
}

// retry, delete and requeue answer 404 for an unknown id and 409 while
// the message is being delivered or its account is paused, with the
// queue's explanation.
func TestAdmin_APIQueueOperations(t *testing.T) {
	paused := fmt.Errorf("%w: account helpdesk needs reconnecting — press Connect", queue.ErrPaused)
	tests := []struct {
		name, method, target string
		err                  error // the queue's answer for the id
		wantCode             int
		wantCall             string
		want                 map[string]string // in the JSON answer
	}{
		{"retry", "POST", "/api/queue/m1/retry", nil, 200, "retry m1", map[string]string{"result": "scheduled now", "id": "m1"}},
		{"retry unknown", "POST", "/api/queue/nosuch/retry", nil, 404, "retry nosuch", map[string]string{"error": "no such message"}},
		{"retry paused", "POST", "/api/queue/m1/retry", paused, 409, "retry m1", map[string]string{"error": paused.Error()}},
		{"retry busy", "POST", "/api/queue/m1/retry", queue.ErrBusy, 409, "retry m1", map[string]string{"error": queue.ErrBusy.Error()}},
		{"retry other error", "POST", "/api/queue/m1/retry", errors.New("disk on fire"), 500, "retry m1", map[string]string{"error": "disk on fire"}},
		{"delete", "DELETE", "/api/queue/m1", nil, 200, "delete m1", map[string]string{"result": "deleted", "id": "m1"}},
		{"delete unknown", "DELETE", "/api/queue/nosuch", nil, 404, "delete nosuch", nil},
		{"delete busy", "DELETE", "/api/queue/m1", queue.ErrBusy, 409, "delete m1", nil},
		{"requeue", "POST", "/api/failed/f1/requeue", nil, 200, "requeue f1", map[string]string{"result": "requeued", "id": "newf1", "from": "f1"}},
		{"requeue unknown", "POST", "/api/failed/nosuch/requeue", nil, 404, "requeue nosuch", nil},
		{"retry by GET", "GET", "/api/queue/m1/retry", nil, 405, "", nil},
		{"delete by POST", "POST", "/api/queue/m1", nil, 405, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			s.q.msgs = testMessages()
			if tt.err != nil {
				for _, m := range s.q.msgs {
					s.q.errs[m.ID] = tt.err
				}
			}
			w := s.api(tt.method, tt.target, testToken)
			if w.Code != tt.wantCode {
				t.Errorf("%d %s, want %d", w.Code, w.Body, tt.wantCode)
			}
			var wantCalls []string
			if tt.wantCall != "" {
				wantCalls = []string{tt.wantCall}
			}
			if got := s.q.recorded(); !slices.Equal(got, wantCalls) {
				t.Errorf("queue asked %q, want %q", got, wantCalls)
			}
			if tt.want != nil {
				if got := decode[map[string]string](t, w); !equalJSON(got, tt.want) {
					t.Errorf("answer %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestAdmin_APIFlushSaysWhatWaits(t *testing.T) {
	s := newTestServer(t, nil)
	s.q.flush = queue.FlushResult{Scheduled: 3, Paused: map[string]int{"helpdesk": 2},
		Why: map[string]string{"helpdesk": "needs reconnecting — press Connect"}}
	w := s.api("POST", "/api/queue/flush", testToken)
	if w.Code != 200 {
		t.Fatalf("flush: %d %s", w.Code, w.Body)
	}
	got := decode[map[string]any](t, w)
	want := map[string]any{"scheduled_now": 3, "paused": map[string]int{"helpdesk": 2},
		"why": map[string]string{"helpdesk": "needs reconnecting — press Connect"}}
	if !equalJSON(got, want) {
		t.Errorf("flush answered %v, want %v", got, want)
	}
	if c := s.q.recorded(); !slices.Equal(c, []string{"flush"}) {
		t.Errorf("queue asked %q", c)
	}
	// Nothing paused: no paused or why keys.
	s.q.flush = queue.FlushResult{Scheduled: 0}
	if got := decode[map[string]any](t, s.api("POST", "/api/queue/flush", testToken)); !equalJSON(got, map[string]any{"scheduled_now": 0}) {
		t.Errorf("flush of nothing answered %v", got)
	}
}

func TestAdmin_APIStatus(t *testing.T) {
	s := newTestServer(t, nil)
	s.q.stats = queue.Stats{Messages: 2, ByState: map[queue.MessageState]int{queue.MsgDeferred: 2}, Oldest: time.Now().Add(-time.Hour)}
	w := s.api("GET", "/api/status", testToken)
	st := decode[Status](t, w)
	if w.Code != 200 || st.Version != "test" || !st.Ready.Ready || len(st.Accounts) != 1 || st.Queue.Messages != 2 {
		t.Errorf("status %d %+v", w.Code, st)
	}
	if st.OldestAgeSeconds < 3600 || st.OldestAgeSeconds > 3700 {
		t.Errorf("oldest_age_seconds %v, want about 3600", st.OldestAgeSeconds)
	}
	accounts := decode[[]tokens.AccountState](t, s.api("GET", "/api/accounts", testToken))
	if len(accounts) != 1 || accounts[0].Account != "helpdesk" {
		t.Errorf("accounts %+v", accounts)
	}
}

func TestAdmin_APIAccountRetry(t *testing.T) {
	tests := []struct {
		name      string
		account   string
		retryErr  error
		wantCode  int
		wantState tokens.State // in the answer's account
		wantText  string
	}{
		{"works again", "helpdesk", nil, 200, tokens.Connected, "resumed"},
		{"still refused", "helpdesk", errors.New("535 5.7.139 SMTP AUTH disabled"), 409, tokens.SMTPAuthDisabled, "still not working: 535 5.7.139"},
		{"unknown account", "nosuch", nil, 404, "", "no account named nosuch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			s.a.states = []tokens.AccountState{helpdeskState(tokens.SMTPAuthDisabled)}
			s.a.retryErr = tt.retryErr
			w := s.api("POST", "/api/accounts/"+tt.account+"/retry", testToken)
			if w.Code != tt.wantCode || !strings.Contains(w.Body.String(), tt.wantText) {
				t.Errorf("%d %s; want %d with %q", w.Code, w.Body, tt.wantCode, tt.wantText)
			}
			calls := s.a.recorded()
			if tt.wantCode == 404 {
				if len(calls) != 0 {
					t.Errorf("Retry called for an unknown account: %q", calls)
				}
				return
			}
			if !slices.Equal(calls, []string{"retry " + tt.account}) {
				t.Errorf("accounts asked %q", calls)
			}
			got := decode[struct {
				Account tokens.AccountState `json:"account"`
			}](t, w)
			if got.Account.State != tt.wantState {
				t.Errorf("answer's account state %q, want %q", got.Account.State, tt.wantState)
			}
		})
	}
}

func TestAdmin_APIAccountTest(t *testing.T) {
	check := func(_ context.Context, account string) CheckResult {
		return CheckResult{Account: account, Mailbox: account + "@contoso.test", Steps: []CheckStep{
			{Step: "token", OK: true, Detail: "got an access token"},
			{Step: "login", Detail: "Microsoft refused the login (535 5.7.139)", Fix: "Set-CASMailbox"},
		}}
	}
	s := newTestServer(t, func(o *Options) { o.Check = check })
	w := s.api("POST", "/api/accounts/helpdesk/test", testToken)
	if got := decode[CheckResult](t, w); w.Code != 200 || !equalJSON(got, check(context.Background(), "helpdesk")) {
		t.Errorf("test: %d %+v", w.Code, got)
	}
	if w := s.api("POST", "/api/accounts/nosuch/test", testToken); w.Code != 404 {
		t.Errorf("test of an unknown account: %d", w.Code)
	}
	if w := newTestServer(t, nil).api("POST", "/api/accounts/helpdesk/test", testToken); w.Code != http.StatusNotImplemented {
		t.Errorf("test without a check configured: %d", w.Code)
	}
}

func TestAdmin_APIDeviceSignIn(t *testing.T) {
	s := newTestServer(t, nil)
	if w := s.api("GET", "/api/accounts/helpdesk/device", testToken); w.Code != 404 {
		t.Errorf("status before a start: %d, want 404", w.Code)
	}
	w := s.api("POST", "/api/accounts/helpdesk/device", testToken)
	d := decode[tokens.DeviceSignIn](t, w)
	if w.Code != 200 || d.Status != "pending" || d.UserCode != "ABCD-EFGH" || d.VerificationURI == "" {
		t.Errorf("start: %d %+v", w.Code, d)
	}
	if got := decode[tokens.DeviceSignIn](t, s.api("GET", "/api/accounts/helpdesk/device", testToken)); got.UserCode != "ABCD-EFGH" {
		t.Errorf("status: %+v", got)
	}
	for _, target := range []string{"/api/accounts/nosuch/device"} {
		if w := s.api("POST", target, testToken); w.Code != 404 {
			t.Errorf("POST %s: %d, want 404", target, w.Code)
		}
		if w := s.api("GET", target, testToken); w.Code != 404 {
			t.Errorf("GET %s: %d, want 404", target, w.Code)
		}
	}
	if got := s.a.recorded(); !slices.Equal(got, []string{"device helpdesk"}) {
		t.Errorf("accounts asked %q", got)
	}
	s.a.deviceErr = errors.New("AADSTS7000218: client secret missing")
	if w := s.api("POST", "/api/accounts/helpdesk/device", testToken); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "AADSTS7000218") {
		t.Errorf("start refused by Microsoft: %d %s, want 502 with the reason", w.Code, w.Body)
	}
}
