package fakegoogle

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const (
	testClientID = "1234567890-fake.apps.googleusercontent.com"
	testSecret   = "GOCSPX-fakesecret"
	testUser     = "alice@example.test"
	testRedirect = "http://127.0.0.1:8765/callback"
)

func startGoogle(t *testing.T) *Google {
	t.Helper()
	g, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	// A desktop client: any port on the loopback address.
	g.OAuth.RegisterClient(testClientID, testSecret, "http://127.0.0.1")
	g.OAuth.SignInAs(testUser)
	return g
}

func oauthConfig(g *Google, secret string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     testClientID,
		ClientSecret: secret,
		RedirectURL:  testRedirect,
		Scopes:       scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL: g.AuthorizeURL, TokenURL: g.TokenURL,
			// Deterministic: AutoDetect would retry and count twice.
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// noRedirect is an HTTP client that stops at the authorize redirect.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       5 * time.Second,
}

// authorize runs the browser's part: it opens authURL and returns the
// redirect's query, or the error page's status and body.
func authorize(t *testing.T, authURL string) (url.Values, int, string) {
	t.Helper()
	resp, err := noRedirect.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusFound {
		return nil, resp.StatusCode, string(body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query(), resp.StatusCode, ""
}

// signIn runs authorize with PKCE and access_type=offline and returns the
// code and the verifier.
func signIn(t *testing.T, cfg *oauth2.Config) (code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	q, status, body := authorize(t, cfg.AuthCodeURL("st4te", oauth2.AccessTypeOffline, oauth2.S256ChallengeOption(verifier)))
	if q == nil {
		t.Fatalf("authorize: %d %s", status, body)
	}
	if q.Get("state") != "st4te" || q.Get("code") == "" {
		t.Fatalf("authorize redirect query %v", q)
	}
	return q.Get("code"), verifier
}

// tokenFor gets a token of testUser's for scopes through the whole flow.
func tokenFor(t *testing.T, g *Google, scopes ...string) *oauth2.Token {
	t.Helper()
	cfg := oauthConfig(g, testSecret, scopes...)
	code, verifier := signIn(t, cfg)
	tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func retrieveError(t *testing.T, err error) *oauth2.RetrieveError {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("want *oauth2.RetrieveError, got %v", err)
	}
	return re
}

func wantOAuthError(t *testing.T, err error, status int, code, description string) {
	t.Helper()
	re := retrieveError(t, err)
	if re.Response.StatusCode != status || re.ErrorCode != code || re.ErrorDescription != description {
		t.Fatalf("got %d %q %q, want %d %q %q", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription, status, code, description)
	}
}

func TestAuthCode_PKCEWithSecret(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope, "openid", "email")
	if tok.RefreshToken == "" || tok.TokenType != "Bearer" {
		t.Fatalf("token %+v", tok)
	}
	if tok.ExpiresIn != 3599 {
		t.Fatalf("expires_in %d, want 3599", tok.ExpiresIn)
	}
	if got := tok.Extra("scope"); got != MailScope+" openid email" {
		t.Fatalf("scope %v", got)
	}
	idTok, _ := tok.Extra("id_token").(string)
	parts := strings.Split(idTok, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token %q", idTok)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct{ Email, Aud string }
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Email != testUser || claims.Aud != testClientID {
		t.Fatalf("id_token claims %s (%v)", raw, err)
	}
	email, scopes, ok := g.OAuth.CheckAccess(tok.AccessToken)
	if !ok || email != testUser || !contains(scopes, MailScope) {
		t.Fatalf("CheckAccess = %q %v %v", email, scopes, ok)
	}
	if n := g.OAuth.Requests(GrantAuthorizationCode); n != 1 {
		t.Fatalf("%d authorization_code requests", n)
	}
}

func TestAuthCode_NoRefreshTokenWithoutOffline(t *testing.T) {
	g := startGoogle(t)
	cfg := oauthConfig(g, testSecret, MailScope)
	q, _, _ := authorize(t, cfg.AuthCodeURL("s"))
	tok, err := cfg.Exchange(context.Background(), q.Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "" || tok.Extra("id_token") != nil {
		t.Fatalf("online access without openid got refresh token %q, id_token %v", tok.RefreshToken, tok.Extra("id_token"))
	}
}

func TestAuthCode_Errors(t *testing.T) {
	tests := []struct {
		name        string
		secret      string
		verifier    func(string) string
		redirect    string
		status      int
		code, descr string
	}{
		{name: "no secret", status: 400, code: "invalid_request", descr: "client_secret is missing."},
		{name: "wrong secret", secret: "nope", status: 401, code: "invalid_client", descr: "Unauthorized"},
		{name: "wrong verifier", secret: testSecret, verifier: func(string) string { return oauth2.GenerateVerifier() },
			status: 400, code: "invalid_grant", descr: "Invalid code verifier."},
		{name: "no verifier", secret: testSecret, verifier: func(string) string { return "" },
			status: 400, code: "invalid_grant", descr: "Missing code verifier."},
		{name: "other redirect_uri", secret: testSecret, redirect: "http://127.0.0.1:9999/callback",
			status: 400, code: "redirect_uri_mismatch", descr: "Bad Request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := startGoogle(t)
			cfg := oauthConfig(g, testSecret, MailScope)
			code, verifier := signIn(t, cfg)
			cfg.ClientSecret = tc.secret
			if tc.redirect != "" {
				cfg.RedirectURL = tc.redirect
			}
			if tc.verifier != nil {
				verifier = tc.verifier(verifier)
			}
			var opts []oauth2.AuthCodeOption
			if verifier != "" {
				opts = append(opts, oauth2.VerifierOption(verifier))
			}
			_, err := cfg.Exchange(context.Background(), code, opts...)
			wantOAuthError(t, err, tc.status, tc.code, tc.descr)
		})
	}
}

func TestAuthCode_SingleUse(t *testing.T) {
	g := startGoogle(t)
	cfg := oauthConfig(g, testSecret, MailScope)
	code, verifier := signIn(t, cfg)
	if _, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier)); err != nil {
		t.Fatal(err)
	}
	_, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, 400, "invalid_grant", "Bad Request")
}

func TestAuthorize_ErrorPages(t *testing.T) {
	g := startGoogle(t)
	tests := []struct {
		name     string
		clientID string
		redirect string
		status   int
		want     string
	}{
		{"unknown client", "nobody.apps.googleusercontent.com", testRedirect, 401, "Error 401: invalid_client"},
		{"unregistered redirect", testClientID, "https://evil.example/cb", 400, "Error 400: redirect_uri_mismatch"},
		{"loopback without port", testClientID, "http://127.0.0.1/cb", 400, "Error 400: redirect_uri_mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := oauthConfig(g, testSecret, MailScope)
			cfg.ClientID, cfg.RedirectURL = tc.clientID, tc.redirect
			q, status, body := authorize(t, cfg.AuthCodeURL("s"))
			if q != nil || status != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("got %v %d %q", q, status, body)
			}
		})
	}
}

func TestAuthorize_Declined(t *testing.T) {
	g := startGoogle(t)
	g.OAuth.DeclineNextAuthorize()
	cfg := oauthConfig(g, testSecret, MailScope)
	q, _, _ := authorize(t, cfg.AuthCodeURL("xyz"))
	if q.Get("error") != "access_denied" || q.Get("state") != "xyz" || q.Get("code") != "" {
		t.Fatalf("declined redirect %v", q)
	}
	if q, _, _ := authorize(t, cfg.AuthCodeURL("xyz")); q.Get("code") == "" {
		t.Fatalf("only the next authorize is declined: %v", q)
	}
}

func TestRefresh_AndRevocation(t *testing.T) {
	g := startGoogle(t)
	cfg := oauthConfig(g, testSecret, MailScope)
	tok := tokenFor(t, g, MailScope)
	tok.Expiry = time.Now().Add(-time.Minute) // make the token source refresh
	fresh, err := cfg.TokenSource(context.Background(), tok).Token()
	if err != nil {
		t.Fatal(err)
	}
	if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken != tok.RefreshToken {
		t.Fatalf("refresh gave %+v", fresh)
	}
	if _, _, ok := g.OAuth.CheckAccess(fresh.AccessToken); !ok {
		t.Fatal("refreshed token not honoured")
	}

	g.OAuth.RevokeAll()
	if _, _, ok := g.OAuth.CheckAccess(fresh.AccessToken); ok {
		t.Fatal("revoked access token still honoured")
	}
	fresh.Expiry = time.Now().Add(-time.Minute)
	_, err = cfg.TokenSource(context.Background(), fresh).Token()
	wantOAuthError(t, err, 400, "invalid_grant", "Token has been expired or revoked.")

	_, err = cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: "1//unknown"}).Token()
	wantOAuthError(t, err, 400, "invalid_grant", "Token has been expired or revoked.")
	if n := g.OAuth.Requests(GrantRefreshToken); n != 3 {
		t.Fatalf("%d refresh requests, want 3", n)
	}
}

func TestRefresh_NeedsClientCredentials(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	cfg := oauthConfig(g, "", MailScope)
	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	wantOAuthError(t, err, 400, "invalid_request", "client_secret is missing.")
	cfg.ClientID = ""
	_, err = cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	wantOAuthError(t, err, 400, "invalid_request", "Could not determine client ID from request.")
}

func TestToken_FailNext(t *testing.T) {
	g := startGoogle(t)
	tok := tokenFor(t, g, MailScope)
	g.OAuth.FailNext(503, `{"error":"internal_failure","error_description":"Backend Error"}`)
	cfg := oauthConfig(g, testSecret, MailScope)
	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	wantOAuthError(t, err, 503, "internal_failure", "Backend Error")
	if _, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
		t.Fatalf("only the next request fails: %v", err)
	}
}

func TestDeviceCode_RefusesGmailScope(t *testing.T) {
	g := startGoogle(t)
	cfg := oauthConfig(g, testSecret, "email", MailScope)
	cfg.Endpoint.DeviceAuthURL = g.OAuth.DeviceCodeURL()
	_, err := cfg.DeviceAuth(context.Background())
	wantOAuthError(t, err, 400, "invalid_scope", "Invalid device flow scope: "+MailScope)

	cfg.Scopes = []string{"email"}
	da, err := cfg.DeviceAuth(context.Background())
	if err != nil || da.DeviceCode == "" || len(da.UserCode) != 9 {
		t.Fatalf("device auth for email: %+v %v", da, err)
	}
	if n := g.OAuth.Requests(GrantDeviceCode); n != 2 {
		t.Fatalf("%d device code requests", n)
	}
}
