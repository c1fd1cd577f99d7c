package integration

import (
	"bytes"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/daemon"
)

// Guessing the admin token is really slowed: past a few wrong tokens, an
// address is locked out and every attempt from it — even the right token,
// even through the login form — is refused until the lock ends; the lock is
// logged once, with the address.
func TestAdmin_GuessingIsLockedOut(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	codes := map[int]int{}
	for range 300 {
		code, _ := api(t, h, "GET", "/api/status", "wrong-token-0123456789")
		codes[code]++
	}
	if codes[401] != 6 || codes[429] != 294 {
		t.Errorf("300 wrong tokens got %v: want 6×401 (5 free, the 6th starts the lock) and then 429", codes)
	}
	if code, body := api(t, h, "GET", "/api/status", h.relay.AdminToken); code != 429 || !strings.Contains(body, "locked out") {
		t.Errorf("the right token during a lockout: %d %s", code, body)
	}
	resp, err := http.PostForm("http://"+h.relay.AdminAddr()+"/login", url.Values{"token": {h.relay.AdminToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || len(resp.Cookies()) != 0 {
		t.Errorf("login with the right token during a lockout: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	if n := strings.Count(h.logs.String(), "address locked out"); n != 1 {
		t.Errorf("%d lockout log lines, want 1", n)
	}
	if !strings.Contains(h.logs.String(), "client=127.0.0.1") {
		t.Errorf("lockout not logged with the address")
	}
	time.Sleep(1100 * time.Millisecond) // the first lock is 1 s
	if code, _ := api(t, h, "GET", "/api/status", h.relay.AdminToken); code != 200 {
		t.Errorf("the right token after the lock: %d", code)
	}
	// Requests without any token (a scraper without its credentials) are
	// refused but lock nobody out: they are not guesses.
	for range 20 {
		api(t, h, "GET", "/metrics", "")
	}
	if code, _ := api(t, h, "GET", "/api/status", h.relay.AdminToken); code != 200 {
		t.Errorf("the right token after requests without one: %d", code)
	}
	// The success forgot the failures: five wrong ones are free again.
	for i := range 5 {
		if code, _ := api(t, h, "GET", "/api/status", "wrong-again-0123456789"); code != 401 {
			t.Errorf("wrong token %d after a success: %d", i+1, code)
		}
	}
}

// A request body cannot make the admin server hold megabytes: a login form
// or an API call is refused past 16 KiB, before anything reads it whole.
func TestAdmin_RequestBodiesAreCapped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	big := bytes.Repeat([]byte("token=xxxxxxxx&"), 700_000) // 10 MB
	resp, err := http.Post("http://"+h.relay.AdminAddr()+"/login", "application/x-www-form-urlencoded", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("10 MB login form: %d, want 413", resp.StatusCode)
	}
	// Without a length (chunked), the cap applies while reading.
	req, _ := http.NewRequest("POST", "http://"+h.relay.AdminAddr()+"/login", struct{ *bytes.Reader }{bytes.NewReader(big)})
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("10 MB chunked login form: %d, want 413", resp.StatusCode)
		}
	}
}

// One canonical admin URL: a page asked for by another loopback name is
// sent to admin.public_url's (the session cookie belongs to one origin),
// and logging in returns to the page that was asked for — a Connect link
// printed by `oauthrelay connect` lands on the Connect flow, not on /.
func TestAdmin_LoginReturnsToThePageAskedFor(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, daemon.Hooks{})
	_, port, _ := net.SplitHostPort(h.relay.AdminAddr())
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://localhost:" + port + "/connect/helpdesk")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "http://127.0.0.1:"+port+"/connect/helpdesk" {
		t.Errorf("page by another loopback name: %d → %q, want the canonical URL", resp.StatusCode, loc)
	}
	base := "http://" + h.relay.AdminAddr()
	resp, _ = noFollow.Get(base + "/connect/helpdesk")
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/login?next=%2Fconnect%2Fhelpdesk" {
		t.Errorf("not logged in: sent to %q", loc)
	}
	resp, _ = noFollow.PostForm(base+"/login", url.Values{"token": {h.relay.AdminToken}, "next": {"/connect/helpdesk"}})
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/connect/helpdesk" {
		t.Errorf("after login: sent to %q, want /connect/helpdesk", loc)
	}
	for _, evil := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example"} {
		resp, _ = noFollow.PostForm(base+"/login", url.Values{"token": {h.relay.AdminToken}, "next": {evil}})
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("next=%q sent to %q, want /", evil, loc)
		}
	}
}
