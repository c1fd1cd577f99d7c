package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// These tests drive the admin server's handler with httptest, in front of
// small fakes of the queue and the token manager that record what they
// are asked.

const testToken = "test-admin-token-0123456789"

// fakeQueue is the admin server's Queue: messages in memory; errs makes
// RetryNow, Delete and Requeue of an id fail.
type fakeQueue struct {
	msgs     []queue.Message
	errs     map[string]error
	flush    queue.FlushResult
	stats    queue.Stats
	writable error

	mu    sync.Mutex
	calls []string
}

func (q *fakeQueue) record(format string, args ...any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls = append(q.calls, fmt.Sprintf(format, args...))
}

func (q *fakeQueue) recorded() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.calls)
}

func (q *fakeQueue) List(f queue.Filter) []queue.Message {
	q.record("list %s/%s", f.State, f.Account)
	var out []queue.Message
	for _, m := range q.msgs {
		if (f.State == "" || m.State == f.State) && (f.Account == "" || m.Account == f.Account) {
			out = append(out, m)
		}
	}
	return out
}

func (q *fakeQueue) Get(id string) (queue.Message, error) {
	for _, m := range q.msgs {
		if m.ID == id {
			return m, nil
		}
	}
	return queue.Message{}, queue.ErrNotFound
}

func (q *fakeQueue) op(name, id string) error {
	q.record("%s %s", name, id)
	if err := q.errs[id]; err != nil {
		return err
	}
	if _, err := q.Get(id); err != nil {
		return err
	}
	return nil
}

func (q *fakeQueue) RetryNow(id string) error { return q.op("retry", id) }
func (q *fakeQueue) Delete(id string) error   { return q.op("delete", id) }

func (q *fakeQueue) Requeue(id string) (string, error) {
	if err := q.op("requeue", id); err != nil {
		return "", err
	}
	return "new" + id, nil
}

func (q *fakeQueue) Flush() queue.FlushResult {
	q.record("flush")
	return q.flush
}

func (q *fakeQueue) Stats() queue.Stats   { return q.stats }
func (q *fakeQueue) CheckWritable() error { return q.writable }

// fakeAccounts is the admin server's Accounts. Retry fails with retryErr,
// else the account is connected again.
type fakeAccounts struct {
	states    []tokens.AccountState
	retryErr  error
	deviceErr error

	mu     sync.Mutex
	calls  []string
	device map[string]tokens.DeviceSignIn
}

func (a *fakeAccounts) record(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, fmt.Sprintf(format, args...))
}

func (a *fakeAccounts) recorded() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

func (a *fakeAccounts) States() []tokens.AccountState { return a.states }

func (a *fakeAccounts) ConnectHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "connect handler: %s", r.URL.Path)
	})
}

func (a *fakeAccounts) Retry(_ context.Context, name string) (tokens.AccountState, error) {
	a.record("retry %s", name)
	var st tokens.AccountState
	for _, s := range a.states {
		if s.Account == name {
			st = s
		}
	}
	if a.retryErr != nil {
		return st, a.retryErr
	}
	st.State, st.Explanation = tokens.Connected, tokens.Explanation{}
	return st, nil
}

func (a *fakeAccounts) Token(_ context.Context, name string) (tokens.Token, error) {
	a.record("token %s", name)
	return tokens.Token{AccessToken: "at-" + name, Mailbox: name + "@contoso.test", Expiry: time.Now().Add(time.Hour)}, nil
}

func (a *fakeAccounts) StartDeviceSignIn(name string) (tokens.DeviceSignIn, error) {
	a.record("device %s", name)
	if a.deviceErr != nil {
		return tokens.DeviceSignIn{}, a.deviceErr
	}
	d := tokens.DeviceSignIn{Account: name, Status: "pending", UserCode: "ABCD-EFGH",
		VerificationURI: "https://microsoft.com/devicelogin", Expires: time.Now().Add(15 * time.Minute)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.device == nil {
		a.device = map[string]tokens.DeviceSignIn{}
	}
	a.device[name] = d
	return d, nil
}

func (a *fakeAccounts) DeviceSignInStatus(name string) (tokens.DeviceSignIn, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d, ok := a.device[name]
	return d, ok
}

func helpdeskState(st tokens.State) tokens.AccountState {
	return tokens.AccountState{Account: "helpdesk", Mailbox: "helpdesk@contoso.test", Flow: "device_code", State: st}
}

type testServer struct {
	*Server
	q *fakeQueue
	a *fakeAccounts
}

func newTestServer(t *testing.T, mod func(*Options)) *testServer {
	t.Helper()
	q := &fakeQueue{errs: map[string]error{}}
	a := &fakeAccounts{states: []tokens.AccountState{helpdeskState(tokens.Connected)}}
	opts := Options{Token: testToken, PublicURL: "http://127.0.0.1:8025", Version: "test", Queue: q, Accounts: a}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{Server: s, q: q, a: a}
}

// api calls the JSON API with the bearer token (none if empty).
func (s *testServer) api(method, target, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// page requests a page with the session cookie (if any) and, for a POST,
// the form.
func (s *testServer) page(method, target string, cookie *http.Cookie, form url.Values) *httptest.ResponseRecorder {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// login logs in with the admin token and returns the session cookie and
// the CSRF token of the status page.
func (s *testServer) login(t *testing.T) (*http.Cookie, string) {
	t.Helper()
	w := s.page("POST", "/login", nil, url.Values{"token": {testToken}})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	cookie := sessionCookie(t, w)
	w = s.page("GET", "/", cookie, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("status page after login: %d", w.Code)
	}
	return cookie, csrfOf(t, w.Body.String())
}

func sessionCookie(t *testing.T, w *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", cookieName, w.Result().Header["Set-Cookie"])
	return nil
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token in the page")
	}
	return m[1]
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("response %q is not JSON: %v", w.Body, err)
	}
	return v
}

func TestAdmin_RefusesShortToken(t *testing.T) {
	if _, err := New(Options{Token: "short", Queue: &fakeQueue{}, Accounts: &fakeAccounts{}}); err == nil {
		t.Error("New accepted a 5-character admin token")
	}
}

// Every API call needs the token; without it nothing reaches the queue.
func TestAdmin_APINeedsToken(t *testing.T) {
	s := newTestServer(t, func(o *Options) {
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })
	})
	s.q.msgs = []queue.Message{{Meta: &queue.Meta{ID: "m1", Account: "helpdesk"}, State: queue.MsgDeferred}}
	calls := []struct{ method, target string }{
		{"GET", "/api/status"}, {"GET", "/api/accounts"}, {"GET", "/api/queue"}, {"GET", "/api/queue/m1"},
		{"POST", "/api/queue/m1/retry"}, {"DELETE", "/api/queue/m1"}, {"POST", "/api/queue/flush"},
		{"POST", "/api/failed/m1/requeue"}, {"POST", "/api/accounts/helpdesk/retry"}, {"POST", "/api/accounts/helpdesk/test"},
		{"POST", "/api/accounts/helpdesk/device"}, {"GET", "/api/accounts/helpdesk/device"}, {"GET", "/metrics"},
	}
	for _, c := range calls {
		for _, token := range []string{"", "wrong-token-0123456789"} {
			w := s.api(c.method, c.target, token)
			if w.Code != http.StatusUnauthorized || !strings.Contains(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with token %q: %d, WWW-Authenticate %q; want 401 with a Bearer challenge",
					c.method, c.target, token, w.Code, w.Header().Get("WWW-Authenticate"))
			}
			if e := decode[map[string]string](t, w)["error"]; !strings.Contains(e, "admin token") {
				t.Errorf("%s %s: error %q does not say what is missing", c.method, c.target, e)
			}
			s.lock.Success("192.0.2.1", "") // keep below the lockout; it has its own test
		}
	}
	if got := s.q.recorded(); len(got) != 0 {
		t.Errorf("the queue was used without a token: %q", got)
	}
	if got := s.a.recorded(); len(got) != 0 {
		t.Errorf("accounts were used without a token: %q", got)
	}
	if w := s.api("GET", "/metrics", testToken); w.Code != http.StatusOK || w.Body.String() != "metrics" {
		t.Errorf("/metrics with the token: %d %q", w.Code, w.Body)
	}
	if w := s.api("GET", "/api/status", testToken); w.Header().Get("X-Frame-Options") != "DENY" || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("security headers missing: %v", w.Header())
	}
}

// Five wrong tokens are free; the sixth starts a lock during which every
// attempt, the right token included, gets 429 (API and login form alike).
// The lock doubles; a right token after it ends forgets the address.
func TestAdmin_LockoutAfterWrongTokens(t *testing.T) {
	s := newTestServer(t, nil)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s.lock.Now = func() time.Time { return now }
	const wrong = "wrong-token-0123456789"

	for i := range 6 {
		if w := s.api("GET", "/api/status", wrong); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i+1, w.Code)
		}
	}
	w := s.api("GET", "/api/status", testToken)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "2" {
		t.Errorf("right token during the lock: %d, Retry-After %q; want 429, 2", w.Code, w.Header().Get("Retry-After"))
	}
	if e := decode[map[string]string](t, w)["error"]; !strings.Contains(e, "locked out") {
		t.Errorf("429 error %q does not say locked out", e)
	}
	if w := s.page("POST", "/login", nil, url.Values{"token": {testToken}}); w.Code != http.StatusTooManyRequests || len(w.Result().Cookies()) != 0 {
		t.Errorf("login with the right token during the lock: %d, cookies %v", w.Code, w.Result().Cookies())
	}

	now = now.Add(1500 * time.Millisecond) // the first lock (1 s) is over
	if w := s.api("GET", "/api/status", wrong); w.Code != http.StatusUnauthorized {
		t.Errorf("wrong token after the lock: %d, want 401", w.Code)
	}
	now = now.Add(1500 * time.Millisecond) // the second lock is 2 s: still on
	if w := s.api("GET", "/api/status", testToken); w.Code != http.StatusTooManyRequests {
		t.Errorf("right token 1.5 s into the doubled lock: %d, want 429", w.Code)
	}
	now = now.Add(time.Second)
	if w := s.api("GET", "/api/status", testToken); w.Code != http.StatusOK {
		t.Errorf("right token after the lock: %d, want 200", w.Code)
	}
	// The success forgot the address: five wrong tokens are free again.
	for i := range 5 {
		if w := s.api("GET", "/api/status", wrong); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d after a success: %d, want 401", i+1, w.Code)
		}
	}
	if w := s.api("GET", "/api/status", testToken); w.Code != http.StatusOK {
		t.Errorf("right token after five wrong ones: %d, want 200", w.Code)
	}
	// Another address is not locked by this one's guesses.
	for range 7 {
		s.api("GET", "/api/status", wrong)
	}
	r := httptest.NewRequest("GET", "/api/status", nil)
	r.RemoteAddr = "198.51.100.7:4000"
	r.Header.Set("Authorization", "Bearer "+testToken)
	w = httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("another address during a lock: %d, want 200", w.Code)
	}
}

func TestAdmin_RequestBodyCapped(t *testing.T) {
	s := newTestServer(t, nil)
	big := strings.Repeat("x", MaxRequestBody+1)
	for _, tt := range []struct{ method, target, token string }{
		{"POST", "/login", ""},
		{"POST", "/api/queue/flush", testToken},
	} {
		r := httptest.NewRequest(tt.method, tt.target, strings.NewReader("token="+big))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tt.token != "" {
			r.Header.Set("Authorization", "Bearer "+tt.token)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s %s with %d bytes: %d, want 413", tt.method, tt.target, r.ContentLength, w.Code)
		}
	}
	if got := s.q.recorded(); len(got) != 0 {
		t.Errorf("an oversized request reached the queue: %q", got)
	}
	// A body without a length is cut at the cap: the form cannot be read,
	// so the login fails.
	r := httptest.NewRequest("POST", "/login", io.MultiReader(strings.NewReader("token="+testToken+"&pad="), strings.NewReader(big)))
	r.ContentLength = -1
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code == http.StatusSeeOther || len(w.Result().Cookies()) != 0 {
		t.Errorf("login with an unbounded body over the cap: %d, cookies %v", w.Code, w.Result().Cookies())
	}
}

func TestAdmin_HealthAndReadiness(t *testing.T) {
	tests := []struct {
		name        string
		writable    error
		listenerErr error
		states      []tokens.AccountState
		wantCode    int
		want        Ready
	}{
		{
			name: "ready", states: []tokens.AccountState{helpdeskState(tokens.Connected)},
			wantCode: 200, want: Ready{Ready: true, Spool: "writable", Listener: "accepting"},
		},
		{
			name: "account needs attention: still ready", states: []tokens.AccountState{helpdeskState(tokens.NeedsReconnect)},
			wantCode: 200, want: Ready{Ready: true, Spool: "writable", Listener: "accepting", AccountsAttention: []string{"helpdesk: needs_reconnect"}},
		},
		{
			name: "spool not writable", writable: fmt.Errorf("disk full"),
			wantCode: 503, want: Ready{Spool: "disk full", Listener: "accepting"},
		},
		{
			name: "listener down", listenerErr: fmt.Errorf("not accepting"),
			wantCode: 503, want: Ready{Spool: "writable", Listener: "not accepting"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) { o.ListenerUp = func() error { return tt.listenerErr } })
			s.q.writable, s.a.states = tt.writable, tt.states
			w := s.api("GET", "/readyz", "")
			if w.Code != tt.wantCode {
				t.Errorf("/readyz: %d, want %d", w.Code, tt.wantCode)
			}
			if got := decode[Ready](t, w); !equalJSON(got, tt.want) {
				t.Errorf("/readyz: %+v, want %+v", got, tt.want)
			}
			if w := s.api("GET", "/healthz", ""); w.Code != 200 || w.Body.String() != "ok\n" {
				t.Errorf("/healthz: %d %q", w.Code, w.Body)
			}
		})
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Pages need a session from the login form: an HttpOnly, SameSite=Strict
// cookie (Secure behind https); every POST needs the session's CSRF token.
func TestAdmin_LoginSessionAndCSRF(t *testing.T) {
	s := newTestServer(t, nil)
	s.q.msgs = []queue.Message{{Meta: &queue.Meta{ID: "m1", Account: "helpdesk", From: "app@contoso.test"}, State: queue.MsgDeferred}}

	if w := s.page("GET", "/", nil, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
		t.Errorf("status page without a session: %d → %q, want 303 → /login", w.Code, w.Header().Get("Location"))
	}
	if w := s.page("GET", "/login", nil, nil); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `name="token"`) {
		t.Errorf("login page: %d", w.Code)
	}
	if w := s.page("POST", "/login", nil, url.Values{"token": {"wrong-token-0123456789"}}); w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
		t.Errorf("wrong token at login: %d, cookies %v; want 401 and none", w.Code, w.Result().Cookies())
	}
	w := s.page("POST", "/login", nil, url.Values{"token": {testToken}})
	c := sessionCookie(t, w)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over http, Path /", c)
	}
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Errorf("login: %d → %q, want 303 → /", w.Code, w.Header().Get("Location"))
	}
	// Logged in, the login page sends you on.
	if w := s.page("GET", "/login?next=/ui/accounts/helpdesk/device", c, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/accounts/helpdesk/device" {
		t.Errorf("login page with a session: %d → %q", w.Code, w.Header().Get("Location"))
	}
	w = s.page("GET", "/", c, nil)
	csrf := csrfOf(t, w.Body.String())
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("status page: %d, Cache-Control %q", w.Code, w.Header().Get("Cache-Control"))
	}

	for _, tt := range []struct {
		name     string
		cookie   *http.Cookie
		csrf     string
		wantCode int
	}{
		{"no session", nil, csrf, http.StatusUnauthorized},
		{"unknown session", &http.Cookie{Name: cookieName, Value: "forged"}, csrf, http.StatusUnauthorized},
		{"no CSRF token", c, "", http.StatusForbidden},
		{"wrong CSRF token", c, csrf + "x", http.StatusForbidden},
	} {
		if w := s.page("POST", "/ui/queue/m1/retry", tt.cookie, url.Values{"csrf": {tt.csrf}}); w.Code != tt.wantCode {
			t.Errorf("%s: %d, want %d", tt.name, w.Code, tt.wantCode)
		}
	}
	if got := s.q.recorded(); slices.Contains(got, "retry m1") {
		t.Errorf("a refused form reached the queue: %q", got)
	}
	w = s.page("POST", "/ui/queue/m1/retry", c, url.Values{"csrf": {csrf}})
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/?msg=") {
		t.Errorf("retry button: %d → %q", w.Code, w.Header().Get("Location"))
	}
	if got := s.q.recorded(); !slices.Contains(got, "retry m1") {
		t.Errorf("retry button did not retry: %q", got)
	}

	// Logging out ends the session on the server, not only in the browser.
	if w := s.page("POST", "/logout", c, url.Values{"csrf": {csrf}}); w.Code != http.StatusSeeOther || sessionCookie(t, w).MaxAge >= 0 {
		t.Errorf("logout: %d", w.Code)
	}
	if w := s.page("GET", "/", c, nil); w.Code != http.StatusSeeOther {
		t.Errorf("status page with the old cookie after logout: %d, want 303 to the login", w.Code)
	}

	// Behind https the cookie is Secure.
	hs := newTestServer(t, func(o *Options) { o.PublicURL = "https://relay.contoso.test" })
	if c := sessionCookie(t, hs.page("POST", "/login", nil, url.Values{"token": {testToken}})); !c.Secure {
		t.Error("session cookie behind https is not Secure")
	}
}

// After logging in the browser goes back to the page it asked for, but
// only ever to a path on this server.
func TestAdmin_LoginNextOnlyLocal(t *testing.T) {
	s := newTestServer(t, nil)
	// A page asked for without a session comes back as next.
	if w := s.page("GET", "/connect/helpdesk?x=1", nil, nil); w.Header().Get("Location") != "/login?next="+url.QueryEscape("/connect/helpdesk?x=1") {
		t.Errorf("Connect without a session → %q", w.Header().Get("Location"))
	}
	for _, tt := range []struct{ next, want string }{
		{"/connect/helpdesk?x=1", "/connect/helpdesk?x=1"},
		{"/ui/accounts/helpdesk/device", "/ui/accounts/helpdesk/device"},
		{"", "/"},
		{"//evil.test/", "/"},
		{"/\\evil.test", "/"},
		{"https://evil.test/", "/"},
		{"javascript:alert(1)", "/"},
		{"evil.test", "/"},
		{"/x\r\nSet-Cookie: a=b", "/"},
	} {
		w := s.page("POST", "/login", nil, url.Values{"token": {testToken}, "next": {tt.next}})
		if got := w.Header().Get("Location"); w.Code != http.StatusSeeOther || got != tt.want {
			t.Errorf("login with next=%q: %d → %q, want → %q", tt.next, w.Code, got, tt.want)
		}
		// A failed login keeps the safe next in its form.
		w = s.page("POST", "/login", nil, url.Values{"token": {"wrong-token-0123456789"}, "next": {tt.next}})
		if got := nextOf(w.Body.String()); got != tt.want {
			t.Errorf("failed login with next=%q keeps %q in its form, want %q", tt.next, got, tt.want)
		}
		s.lock.Success("192.0.2.1", "")
	}
	// The login page's next is checked the same way.
	if got := nextOf(s.page("GET", "/login?next=//evil.test", nil, nil).Body.String()); got != "/" {
		t.Errorf("login page keeps next %q, want /", got)
	}
}

var nextRe = regexp.MustCompile(`name="next" value="([^"]*)"`)

// nextOf is the login form's next, unescaped.
func nextOf(page string) string {
	m := nextRe.FindStringSubmatch(page)
	if m == nil {
		return "(no next field)"
	}
	return html.UnescapeString(m[1])
}

// A page asked for by another loopback name than admin.public_url's is
// sent to the public one (the session cookie belongs to one origin); the
// API, health and POSTs never are.
func TestAdmin_CanonicalHostRedirect(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.PublicURL = "http://localhost:8025" })
	for _, tt := range []struct {
		method, host, target string
		want                 string // Location of a 302; "" none
	}{
		{"GET", "127.0.0.1:8025", "/", "http://localhost:8025/"},
		{"GET", "127.0.0.1:8025", "/login?next=%2Fconnect%2Fhelpdesk", "http://localhost:8025/login?next=%2Fconnect%2Fhelpdesk"},
		{"GET", "[::1]:8025", "/connect/helpdesk", "http://localhost:8025/connect/helpdesk"},
		{"GET", "localhost:8025", "/", ""},
		{"GET", "127.0.0.1:8025", "/api/status", ""},
		{"GET", "127.0.0.1:8025", "/healthz", ""},
		{"GET", "127.0.0.1:8025", "/readyz", ""},
		{"GET", "127.0.0.1:8025", "/metrics", ""},
		{"GET", "127.0.0.1:8025", "/oauth/callback?state=x", ""},
		{"POST", "127.0.0.1:8025", "/login", ""},
		{"GET", "127.0.0.1:9999", "/", ""},          // another port: another server
		{"GET", "relay.contoso.test:8025", "/", ""}, // not a loopback name
	} {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		r.Host = tt.host
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		redirected := w.Code == http.StatusFound
		if got := w.Header().Get("Location"); redirected != (tt.want != "") || redirected && got != tt.want {
			t.Errorf("%s http://%s%s: %d → %q, want → %q", tt.method, tt.host, tt.target, w.Code, got, tt.want)
		}
	}
}

// The OAuth callback needs no session (Microsoft's redirect is
// cross-site); Connect does.
func TestAdmin_ConnectAndCallback(t *testing.T) {
	s := newTestServer(t, nil)
	if w := s.page("GET", "/oauth/callback?state=x&code=y", nil, nil); w.Code != http.StatusOK || w.Body.String() != "connect handler: /oauth/callback" {
		t.Errorf("callback without a session: %d %q", w.Code, w.Body)
	}
	c, _ := s.login(t)
	// helpdesk is a device_code account: its Connect link shows a code on
	// the page instead of the redirect flow.
	if w := s.page("GET", "/connect/helpdesk", c, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/accounts/helpdesk/device" {
		t.Errorf("Connect of a device_code account: %d %q", w.Code, w.Header().Get("Location"))
	}
	if w := s.page("GET", "/connect/other", c, nil); w.Code != http.StatusOK || w.Body.String() != "connect handler: /connect/other" {
		t.Errorf("Connect of another account: %d %q", w.Code, w.Body)
	}
}

// LimitListener holds a connection beyond n in the backlog until an open
// one closes; closing a connection twice frees one slot only.
func TestAdmin_LimitListenerHoldsExtraConnections(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(inner, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted while the first is open")
	default:
	}
	first.Close()
	second := <-accepted
	first.Close() // again: must not free the slot second holds
	if n := len(ln.(*limitListener).slots); n != 1 {
		t.Errorf("%d slots taken with one connection open, want 1", n)
	}
	second.Close()
}
