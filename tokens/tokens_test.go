package tokens_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/tokens"
)

const (
	mailbox = "helpdesk@contoso.test"
	secret  = "s3cret-client-value"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	fake    *fakem365.M365
	store   *tokens.FileKeysafe
	path    string
	key     []byte
	logs    *syncBuffer
	account tokens.Account
}

func newEnv(t *testing.T, flow string) *env {
	t.Helper()
	fake, err := fakem365.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	key := make([]byte, 32)
	rand.Read(key)
	path := filepath.Join(t.TempDir(), "keysafe.bin")
	store, err := tokens.OpenFileKeysafe(path, key)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{fake: fake, store: store, path: path, key: key, logs: &syncBuffer{},
		account: tokens.Account{Name: "helpdesk", Tenant: "contoso.test", ClientID: "client-1", Flow: flow, Mailbox: mailbox, Authority: fake.Entra.URL}}
	if flow == tokens.FlowClientCredentials {
		e.account.ClientSecret = secret
		fake.Entra.RegisterClient("client-1", secret)
	}
	// Secrets never leak: every test's log output is checked at the end.
	t.Cleanup(func() {
		logs := e.logs.String()
		for _, s := range append(fake.Entra.Secrets(), secret, string(key)) {
			if s != "" && strings.Contains(logs, s) {
				t.Errorf("a secret reached the logs: %.12s…", s)
			}
		}
	})
	return e
}

func (e *env) manager(t *testing.T, mod func(*tokens.Options)) *tokens.Manager {
	t.Helper()
	opts := tokens.Options{
		Accounts: []tokens.Account{e.account}, Store: e.store,
		Logger:           slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TransientRetries: []time.Duration{},
		WatchInterval:    20 * time.Millisecond,
	}
	if mod != nil {
		mod(&opts)
	}
	m, err := tokens.NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// connect signs the account in through the device flow at the fake.
func (e *env) connect(t *testing.T, m *tokens.Manager) {
	t.Helper()
	_, err := m.ConnectDevice(context.Background(), e.account.Name, func(dc tokens.DeviceCode) {
		if err := e.fake.Entra.ApproveDevice(dc.UserCode, mailbox); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// XOAUTH2 has one step. Google's JSON error challenge gets the empty
// response its docs ask for (then its 535 is read), once; anything else,
// or a second one, is an error, never a silent success.
func TestXOAuth2_InitialResponseAndChallenges(t *testing.T) {
	x := &tokens.XOAuth2{User: "a@b.c", Token: "tok"}
	mech, ir, err := x.Start()
	if mech != "XOAUTH2" || string(ir) != "user=a@b.c\x01auth=Bearer tok\x01\x01" || err != nil {
		t.Fatalf("Start = %q %q %v", mech, ir, err)
	}
	if resp, err := x.Next([]byte("")); err == nil || resp != nil {
		t.Errorf("Next(empty) = %q, %v; a challenge that is no error must fail", resp, err)
	}
	googleErr := []byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`)
	if resp, err := x.Next(googleErr); err != nil || resp == nil || len(resp) != 0 {
		t.Errorf("Next(Google's error) = %q, %v; want the empty response", resp, err)
	}
	if resp, err := x.Next(googleErr); err == nil || resp != nil {
		t.Errorf("a second challenge = %q, %v; want an error", resp, err)
	}
	x.Start() // a new login starts afresh
	if resp, err := x.Next(googleErr); err != nil || resp == nil {
		t.Errorf("after Start, Next(Google's error) = %q, %v", resp, err)
	}
}

func TestManager_ConcurrentCallersShareOneRefresh(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	m := e.manager(t, nil)
	e.connect(t, m)
	m.Invalidate("helpdesk")
	before := e.fake.Entra.Requests(fakem365.GrantRefreshToken)
	var wg sync.WaitGroup
	toks := make([]string, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := m.Token(context.Background(), "helpdesk")
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok.AccessToken
		}()
	}
	wg.Wait()
	if got := e.fake.Entra.Requests(fakem365.GrantRefreshToken) - before; got != 1 {
		t.Fatalf("100 concurrent lookups made %d token requests, want 1", got)
	}
	for range 1000 {
		if tok, _ := m.Token(context.Background(), "helpdesk"); tok.AccessToken != toks[0] {
			t.Fatal("cached lookups must return the cached token")
		}
	}
	if got := e.fake.Entra.Requests(fakem365.GrantRefreshToken) - before; got != 1 {
		t.Fatalf("cached lookups made requests: %d", got)
	}
	if g, ok := e.fake.Entra.CheckAccess(toks[0]); !ok || g.UPN != mailbox {
		t.Error("token not valid at the fake")
	}
}

func TestManager_ShortLivedTokensRefreshedProactively(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	e.fake.Entra.SetAccessTokenLifetime(2 * time.Second)
	m := e.manager(t, nil)
	e.connect(t, m)
	before := e.fake.Entra.Requests(fakem365.GrantRefreshToken)
	lookups := 0
	deadline := time.Now().Add(7 * time.Second)
	for time.Now().Before(deadline) {
		tok, err := m.Token(context.Background(), "helpdesk")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := e.fake.Entra.CheckAccess(tok.AccessToken); !ok {
			t.Fatal("handed out an expired token")
		}
		lookups++
		time.Sleep(20 * time.Millisecond)
	}
	requests := e.fake.Entra.Requests(fakem365.GrantRefreshToken) - before
	// 7 s of 2 s tokens renewed at ~1.2 s: about 6 requests, whatever the lookups.
	if requests < 3 || requests > 10 {
		t.Fatalf("%d lookups over 7 s made %d token requests, want about one per lifetime", lookups, requests)
	}
	t.Logf("%d lookups, %d token requests", lookups, requests)
}

func TestManager_RotationWithRevocationSurvivesReopen(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	e.fake.Entra.SetRevokeOnRotate(true)
	m := e.manager(t, nil)
	e.connect(t, m)
	for range 10 {
		if err := m.ForceRefresh(context.Background(), "helpdesk"); err != nil {
			t.Fatal(err)
		}
	}
	store2, err := tokens.OpenFileKeysafe(e.path, e.key)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store2
	m2 := e.manager(t, nil)
	if _, err := m2.Token(context.Background(), "helpdesk"); err != nil {
		t.Fatalf("after reopening the keysafe the newest refresh token must work: %v", err)
	}
	if st := m2.State("helpdesk"); st.State != tokens.Connected || st.ConsentedBy != mailbox {
		t.Errorf("state %+v", st)
	}
}

func TestManager_EntraErrorsSetStateWithExplanation(t *testing.T) {
	tests := []struct {
		code   int
		state  tokens.State
		phrase string
	}{
		{65001, tokens.Misconfigured, "administrator consent"},
		{90094, tokens.Misconfigured, "administrator consent"},
		{70008, tokens.NeedsReconnect, "expired"},
		{700082, tokens.NeedsReconnect, "expired"},
		{50173, tokens.NeedsReconnect, "revoked"},
		{54005, tokens.NeedsReconnect, "already used"},
		{7000215, tokens.Misconfigured, "client secret is wrong"},
		{7000222, tokens.Misconfigured, "client secret has expired"},
		{7000218, tokens.Misconfigured, "client secret is required"},
		{50076, tokens.NeedsReconnect, "multi-factor"},
		{50079, tokens.NeedsReconnect, "multi-factor"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tokens.FlowDeviceCode)
			m := e.manager(t, nil)
			e.connect(t, m)
			var seen []tokens.AccountState
			var mu sync.Mutex
			m.Subscribe(func(s tokens.AccountState) { mu.Lock(); seen = append(seen, s); mu.Unlock() })
			m.Invalidate("helpdesk")
			e.fake.Entra.FailNext(fakem365.GrantRefreshToken, fakem365.Fault{Code: tt.code})
			_, err := m.Token(context.Background(), "helpdesk")
			var ae *tokens.AccountError
			if !errors.As(err, &ae) || ae.State != tt.state || !strings.Contains(ae.Explanation.Title, tt.phrase) {
				t.Fatalf("got %v", err)
			}
			if ae.Explanation.Code != fmt.Sprintf("AADSTS%d", tt.code) || ae.Explanation.Action == "" {
				t.Errorf("explanation lacks code or action: %+v", ae.Explanation)
			}
			if tt.code == 65001 && !strings.Contains(ae.Explanation.URL, "/contoso.test/v2.0/adminconsent?client_id=client-1") {
				t.Errorf("admin consent URL %q", ae.Explanation.URL)
			}
			mu.Lock()
			if len(seen) != 1 || seen[0].State != tt.state {
				t.Errorf("subscribers saw %+v", seen)
			}
			mu.Unlock()
			// The refused grant is not tried again until someone reconnects.
			n := e.fake.Entra.Requests(fakem365.GrantRefreshToken)
			m.Token(context.Background(), "helpdesk")
			if tt.state == tokens.NeedsReconnect && e.fake.Entra.Requests(fakem365.GrantRefreshToken) != n {
				t.Error("a refused refresh token was sent again")
			}
		})
	}
}

func TestManager_TransientErrorsKeepStateAndRetry(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	m := e.manager(t, nil)
	e.connect(t, m)
	m.Invalidate("helpdesk")
	e.fake.Entra.FailNext(fakem365.GrantRefreshToken, fakem365.Fault{HTTPStatus: 503})
	_, err := m.Token(context.Background(), "helpdesk")
	if !errors.Is(err, tokens.ErrTransient) {
		t.Fatalf("503 must be transient: %v", err)
	}
	if st := m.State("helpdesk").State; st != tokens.Connected {
		t.Errorf("state changed to %s on a transient error", st)
	}
	m2 := e.manager(t, func(o *tokens.Options) {
		o.TransientRetries = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}
	})
	e.fake.Entra.FailNext(fakem365.GrantRefreshToken, fakem365.Fault{HTTPStatus: 500}, fakem365.Fault{HTTPStatus: 429})
	if _, err := m2.Token(context.Background(), "helpdesk"); err != nil {
		t.Fatalf("retries with backoff should get through: %v", err)
	}
}

func TestManager_ClientCredentials(t *testing.T) {
	e := newEnv(t, tokens.FlowClientCredentials)
	m := e.manager(t, nil)
	tok, err := m.Token(context.Background(), "helpdesk")
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := e.fake.Entra.CheckAccess(tok.AccessToken); !ok || !g.AppOnly {
		t.Fatal("want an app-only token")
	}
	m.Token(context.Background(), "helpdesk")
	if n := e.fake.Entra.Requests(fakem365.GrantClientCredentials); n != 1 {
		t.Errorf("requests %d, want 1 (cached)", n)
	}
	e.account.ClientSecret = "wrong"
	_, err = e.manager(t, nil).Token(context.Background(), "helpdesk")
	var ae *tokens.AccountError
	if !errors.As(err, &ae) || ae.State != tokens.Misconfigured || ae.Explanation.Code != "AADSTS7000215" {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestManager_NotConnected(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	m := e.manager(t, nil)
	_, err := m.Token(context.Background(), "helpdesk")
	var ae *tokens.AccountError
	if !errors.As(err, &ae) || ae.State != tokens.NotConnected || !strings.Contains(ae.Explanation.Action, "oauthrelay connect helpdesk --device") {
		t.Fatalf("got %v", err)
	}
}

func TestManager_BackgroundRefreshAndReconnectPickup(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	m := e.manager(t, func(o *tokens.Options) { o.BackgroundRefresh = 200 * time.Millisecond })
	e.connect(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	first, _, _ := e.store.Get("helpdesk")
	waitFor(t, "background refresh", func() bool {
		r, _, _ := e.store.Get("helpdesk")
		return r.LastRefresh.After(first.LastRefresh) && r.RefreshToken != first.RefreshToken
	})

	// Revoked (password reset): the account needs reconnecting …
	e.fake.Entra.RevokeAll()
	// A background refresh already under way may still cache the access
	// token it got before the revocation (Entra's own would stay valid
	// too); the refresh after it must fail.
	waitFor(t, "the revoked grant refused", func() bool {
		m.Invalidate("helpdesk")
		_, err := m.Token(context.Background(), "helpdesk")
		return err != nil
	})
	connected := make(chan struct{}, 1)
	m.Subscribe(func(s tokens.AccountState) {
		if s.State == tokens.Connected {
			connected <- struct{}{}
		}
	})
	// … and another process (oauthrelay connect) reconnects it through the
	// same keysafe file; the running manager picks that up by itself.
	other, _ := tokens.OpenFileKeysafe(e.path, e.key)
	e2 := *e
	e2.store = other
	e2.connect(t, e2.manager(t, nil))
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatal("reconnect by another process not picked up")
	}
	if _, err := m.Token(context.Background(), "helpdesk"); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnect_EndToEndOverHTTP(t *testing.T) {
	e := newEnv(t, tokens.FlowAuthorizationCode)
	var m *tokens.Manager
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.ConnectHandler().ServeHTTP(w, r) }))
	defer srv.Close()
	m = e.manager(t, func(o *tokens.Options) { o.RedirectURL = srv.URL + "/oauth/callback" })

	var hops []string
	client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		hops = append(hops, r.URL.String())
		return nil
	}}
	resp, err := client.Get(srv.URL + "/connect/helpdesk")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Connected as "+mailbox+"; mail for "+mailbox+" flows now") {
		t.Fatalf("result page %d:\n%s", resp.StatusCode, page)
	}
	auth, _ := url.Parse(hops[0])
	q := auth.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("login_hint") != mailbox || q.Get("prompt") != "select_account" || q.Get("state") == "" {
		t.Errorf("authorize request %v", q)
	}
	if st := m.State("helpdesk"); st.State != tokens.Connected || st.ConsentedBy != mailbox {
		t.Errorf("state after connect %+v", st)
	}
	rec, ok, _ := e.store.Get("helpdesk")
	if !ok || rec.RefreshToken == "" {
		t.Fatal("refresh token not stored")
	}

	// The callback URL cannot be used twice, nor with a made-up state.
	callback := hops[len(hops)-1]
	for _, u := range []string{callback, srv.URL + "/oauth/callback?code=x&state=forged"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "not valid any more") {
			t.Errorf("%s: %d %s", u, resp.StatusCode, body)
		}
	}

	// Consent required: the page explains it and gives the admin consent link.
	e.fake.Entra.SetAuthorizeError(&fakem365.AuthorizeError{Error: "consent_required", Description: "AADSTS65001: The user or administrator has not consented."})
	resp, err = client.Get(srv.URL + "/connect/helpdesk")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"administrator consent is needed", "/contoso.test/v2.0/adminconsent?client_id=client-1", "Global or Privileged Role Administrator"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("consent page lacks %q:\n%s", want, page)
		}
	}
}

func TestConnectDevice_DeclinedAndExpired(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	m := e.manager(t, nil)
	for _, tt := range []struct {
		name string
		act  func(code string) error
		want string
	}{
		{"declined", e.fake.Entra.DeclineDevice, "declined"},
		{"expired", e.fake.Entra.ExpireDevice, "expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.ConnectDevice(context.Background(), "helpdesk", func(dc tokens.DeviceCode) {
				if !strings.Contains(dc.Message, dc.UserCode) || !strings.Contains(dc.Message, dc.VerificationURI) {
					t.Errorf("message %q", dc.Message)
				}
				go func() {
					time.Sleep(1200 * time.Millisecond) // after at least one pending poll
					tt.act(dc.UserCode)
				}()
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestKeysafe_WrongKeyLeavesFileUntouchedAndMode0600(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	if err := e.store.Put(tokens.Record{Account: "a", RefreshToken: "rt-123"}); err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(e.path)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	before, _ := os.ReadFile(e.path)
	if bytes.Contains(before, []byte("rt-123")) {
		t.Fatal("refresh token stored in clear")
	}
	wrong := make([]byte, 32)
	_, err := tokens.OpenFileKeysafe(e.path, wrong)
	if !errors.Is(err, tokens.ErrWrongKey) || !strings.Contains(err.Error(), "OAUTHRELAY_KEYSAFE_KEY") {
		t.Fatalf("want a clear wrong-key error, got %v", err)
	}
	after, _ := os.ReadFile(e.path)
	if !bytes.Equal(before, after) {
		t.Error("a wrong key changed the file")
	}
}

func TestLoadKey_CreatesKeyFile0600Once(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ks := filepath.Join(dir, "keysafe.bin")
	k1, err := tokens.LoadKey("", "", ks, log)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(ks + ".key")
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}
	if !strings.Contains(logs.String(), ks+".key") {
		t.Error("the key file's path is not logged")
	}
	k2, _ := tokens.LoadKey("", "", ks, log)
	if !bytes.Equal(k1, k2) {
		t.Error("second start made a new key")
	}
	if _, err := tokens.LoadKey("not base64!", "", ks, log); err == nil || !strings.Contains(err.Error(), "head -c 32 /dev/urandom | base64") {
		t.Errorf("bad key: %v", err)
	}
}

func BenchmarkToken_Cached(b *testing.B) {
	fake, err := fakem365.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	key := make([]byte, 32)
	store, _ := tokens.OpenFileKeysafe(filepath.Join(b.TempDir(), "ks"), key)
	fake.Entra.RegisterClient("app", secret)
	m, _ := tokens.NewManager(tokens.Options{Store: store, Accounts: []tokens.Account{{Name: "a", Tenant: "t", ClientID: "app",
		ClientSecret: secret, Flow: tokens.FlowClientCredentials, Mailbox: "a@b.c", Authority: fake.Entra.URL}}})
	ctx := context.Background()
	if _, err := m.Token(ctx, "a"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Token(ctx, "a"); err != nil {
			b.Fatal(err)
		}
	}
	if n := fake.Entra.Requests(fakem365.GrantClientCredentials); n != 1 {
		b.Fatalf("network requests during benchmark: %d", n)
	}
}
