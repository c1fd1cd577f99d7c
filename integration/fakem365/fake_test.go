package fakem365

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const mailbox = "helpdesk@contoso.test"

func start(t *testing.T) *M365 {
	t.Helper()
	m, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func oauthConfig(m *M365) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    "client-1",
		RedirectURL: "http://127.0.0.1:1/oauth/callback",
		Scopes:      []string{"openid", "offline_access", "https://outlook.office.com/SMTP.Send"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   m.Entra.URL + "/contoso.test/oauth2/v2.0/authorize",
			TokenURL:  m.Entra.URL + "/contoso.test/oauth2/v2.0/token",
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// authorize runs /authorize and returns the redirect's query.
func authorize(t *testing.T, cfg *oauth2.Config, verifier string) url.Values {
	t.Helper()
	resp, err := noRedirects.Get(cfg.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("login_hint", mailbox)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d %v", resp.StatusCode, err)
	}
	return loc.Query()
}

func delegatedToken(t *testing.T, m *M365) *oauth2.Token {
	t.Helper()
	cfg := oauthConfig(m)
	v := oauth2.GenerateVerifier()
	q := authorize(t, cfg, v)
	if q.Get("state") != "st4te" {
		t.Fatalf("state not echoed: %v", q)
	}
	tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type xoauth2 struct{ user, token string }

func (x xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}
func (x xoauth2) Next([]byte) ([]byte, error) { return nil, errors.New("unexpected challenge") }

func dial(t *testing.T, m *M365) *smtp.Client {
	t.Helper()
	c, err := smtp.DialStartTLS(m.SMTP.Addr, &tls.Config{RootCAs: m.CA.Pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(c *smtp.Client, from string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt("someone@example.com", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

func wantCode(t *testing.T, err error, code int, enhanced smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enhanced {
		t.Fatalf("want %d %v, got %v", code, enhanced, err)
	}
}

func TestFake_XOAUTH2LoginWithEntraTokenDelivers(t *testing.T) {
	m := start(t)
	tok := delegatedToken(t, m)
	if tok.RefreshToken == "" || tok.Extra("id_token") == nil {
		t.Fatalf("delegated token with offline_access+openid must carry refresh and id token: %+v", tok)
	}
	c := dial(t, m)
	if ok, _ := c.Extension("AUTH"); !ok {
		t.Fatal("AUTH must be offered after STARTTLS")
	}
	if err := c.Auth(xoauth2{mailbox, tok.AccessToken}); err != nil {
		t.Fatal(err)
	}
	body := "Subject: hi\r\n\r\n.leading dot\r\n"
	if err := send(c, mailbox, body); err != nil {
		t.Fatal(err)
	}
	msgs := m.SMTP.Messages()
	if len(msgs) != 1 || string(msgs[0].Data) != body || msgs[0].Mailbox != mailbox {
		t.Fatalf("recorded %+v", msgs)
	}
	if attempts, ok := m.SMTP.Auths(); attempts != 1 || ok != 1 {
		t.Errorf("auths = %d/%d", attempts, ok)
	}
}

func TestFake_BadTokensGet535_5_7_3(t *testing.T) {
	m := start(t)
	good := delegatedToken(t, m)
	m.Entra.SetAccessTokenLifetime(-time.Second)
	expired := delegatedToken(t, m)
	tests := []struct{ name, user, token string }{
		{"wrong token", mailbox, "not-a-token"},
		{"expired token", mailbox, expired.AccessToken},
		{"other mailbox", "ceo@contoso.test", good.AccessToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dial(t, m).Auth(xoauth2{tt.user, tt.token})
			wantCode(t, err, 535, smtp.EnhancedCode{5, 7, 3})
		})
	}
}

func TestFake_AuthBeforeStartTLSRefused(t *testing.T) {
	m := start(t)
	tok := delegatedToken(t, m)
	c, err := smtp.Dial(m.SMTP.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH must not be offered before STARTTLS")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS must be offered")
	}
	if err := c.Auth(xoauth2{mailbox, tok.AccessToken}); err == nil {
		t.Fatal("AUTH over plaintext was accepted")
	}
	if _, ok := m.SMTP.Auths(); ok != 0 {
		t.Error("a token was checked over plaintext")
	}
}

func TestFake_MailWithoutAuth530(t *testing.T) {
	m := start(t)
	err := send(dial(t, m), mailbox, "x\r\n")
	wantCode(t, err, 530, smtp.EnhancedCode{5, 7, 57})
}

func TestFake_RotationWithRevocation(t *testing.T) {
	m := start(t)
	m.Entra.SetRevokeOnRotate(true)
	cfg := oauthConfig(m)
	first := delegatedToken(t, m)
	second, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatal("each refresh must return a new refresh token")
	}
	_, err = cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || !strings.Contains(string(re.Body), "50173") {
		t.Fatalf("old refresh token should fail with invalid_grant AADSTS50173, got %v", err)
	}
	if _, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: second.RefreshToken}).Token(); err != nil {
		t.Fatalf("newest refresh token should work: %v", err)
	}
	if got := m.Entra.Requests(GrantRefreshToken); got != 3 {
		t.Errorf("refresh requests = %d, want 3", got)
	}
}

func TestFake_PKCEVerified(t *testing.T) {
	m := start(t)
	cfg := oauthConfig(m)
	q := authorize(t, cfg, oauth2.GenerateVerifier())
	_, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	if err == nil || !strings.Contains(err.Error(), "501481") {
		t.Fatalf("wrong verifier accepted or wrong error: %v", err)
	}
}

func TestFake_EntraFaultsShapedLikeEntra(t *testing.T) {
	m := start(t)
	tok := delegatedToken(t, m)
	cfg := oauthConfig(m)
	for _, code := range []int{70008, 65001, 7000222, 50076} {
		m.Entra.FailNext(GrantRefreshToken, Fault{Code: code})
		_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || !strings.HasPrefix(re.ErrorDescription, fmt.Sprintf("AADSTS%d:", code)) ||
			!strings.Contains(string(re.Body), fmt.Sprintf(`"error_codes":[%d]`, code)) {
			t.Errorf("AADSTS%d: got %v", code, err)
		}
	}
	m.Entra.FailNext(GrantRefreshToken, Fault{HTTPStatus: 503})
	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != 503 {
		t.Errorf("injected 503: got %v", err)
	}
	m.Entra.SetAuthorizeError(&AuthorizeError{Error: "consent_required", Description: "AADSTS65001: consent"})
	if q := authorize(t, cfg, oauth2.GenerateVerifier()); q.Get("error") != "consent_required" || q.Get("code") != "" {
		t.Errorf("authorize error not redirected: %v", q)
	}
}

func TestFake_ClientSecretChecked(t *testing.T) {
	m := start(t)
	m.Entra.RegisterClient("app", "s3cret")
	cc := clientcredentials.Config{ClientID: "app", TokenURL: m.Entra.URL + "/t/oauth2/v2.0/token",
		Scopes: []string{"https://outlook.office365.com/.default"}, AuthStyle: oauth2.AuthStyleInParams}
	for secret, want := range map[string]string{"": "7000218", "wrong": "7000215"} {
		cc.ClientSecret = secret
		if _, err := cc.Token(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("secret %q: want AADSTS%s, got %v", secret, want, err)
		}
	}
	cc.ClientSecret = "s3cret"
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// An app-only token may send as any mailbox (SMTP.SendAsApp).
	if err := dial(t, m).Auth(xoauth2{"anyone@contoso.test", tok.AccessToken}); err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "" {
		t.Error("client credentials must not return a refresh token")
	}
}

func TestFake_DeviceFlow(t *testing.T) {
	m := start(t)
	cfg := oauthConfig(m)
	cfg.Endpoint.DeviceAuthURL = m.Entra.URL + "/contoso.test/oauth2/v2.0/devicecode"
	ctx := context.Background()
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond) // at least one authorization_pending poll
		m.Entra.ApproveDevice(da.UserCode, mailbox)
	}()
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := m.Entra.CheckAccess(tok.AccessToken); !ok || g.UPN != mailbox {
		t.Fatalf("device token not valid for %s: %+v", mailbox, g)
	}
	if m.Entra.Requests(GrantDeviceCode) < 2 {
		t.Error("expected a pending poll before approval")
	}
	da2, _ := cfg.DeviceAuth(ctx)
	m.Entra.DeclineDevice(da2.UserCode)
	if _, err := cfg.DeviceAccessToken(ctx, da2); err == nil || !strings.Contains(err.Error(), "authorization_declined") {
		t.Errorf("declined: %v", err)
	}
}

func TestFake_SMTPFaultInjection(t *testing.T) {
	m := start(t)
	tok := delegatedToken(t, m)
	login := func(t *testing.T) *smtp.Client {
		c := dial(t, m)
		if err := c.Auth(xoauth2{mailbox, tok.AccessToken}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("nth MAIL", func(t *testing.T) {
		m.SMTP.ReplyAt(StageMail, 1, ReplyThreadLimit)
		wantCode(t, send(login(t), mailbox, "x\r\n"), 432, smtp.EnhancedCode{4, 3, 2})
	})
	t.Run("next RCPT", func(t *testing.T) {
		m.SMTP.FailNext(StageRcpt, ReplyTooManyRcpts)
		wantCode(t, send(login(t), mailbox, "x\r\n"), 452, smtp.EnhancedCode{4, 5, 3})
	})
	t.Run("next DATA", func(t *testing.T) {
		m.SMTP.FailNext(StageData, ReplyTempFailure)
		wantCode(t, send(login(t), mailbox, "x\r\n"), 451, smtp.EnhancedCode{4, 7, 500})
	})
	t.Run("send as denied", func(t *testing.T) {
		wantCode(t, send(login(t), "ceo@contoso.test", "x\r\n"), 554, smtp.EnhancedCode{5, 2, 252})
		m.SMTP.SetSendAsCheck(false)
		defer m.SMTP.SetSendAsCheck(true)
		if err := send(login(t), "ceo@contoso.test", "x\r\n"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("auth disabled", func(t *testing.T) {
		m.SMTP.SetAuthDisabled(mailbox, true)
		defer m.SMTP.SetAuthDisabled(mailbox, false)
		wantCode(t, dial(t, m).Auth(xoauth2{mailbox, tok.AccessToken}), 535, smtp.EnhancedCode{5, 7, 139})
	})
	t.Run("concurrency", func(t *testing.T) {
		m.SMTP.SetMaxConcurrent(1)
		defer m.SMTP.SetMaxConcurrent(0)
		login(t)
		wantCode(t, send(login(t), mailbox, "x\r\n"), 432, smtp.EnhancedCode{4, 3, 2})
	})
	t.Run("rate", func(t *testing.T) {
		m.SMTP.SetRatePerMinute(1)
		defer m.SMTP.SetRatePerMinute(0)
		c := login(t)
		// Messages earlier in this test already count against the minute.
		wantCode(t, send(c, mailbox, "x\r\n"), 421, smtp.EnhancedCode{4, 4, 2})
	})
	t.Run("drop during DATA", func(t *testing.T) {
		m.SMTP.DropDuringData(1)
		before := len(m.SMTP.Messages())
		err := send(login(t), mailbox, strings.Repeat("a line of text\r\n", 1000))
		if err == nil {
			t.Fatal("a dropped connection must surface as an error")
		}
		if len(m.SMTP.Messages()) != before {
			t.Error("a dropped message was recorded")
		}
	})
	t.Run("slow replies", func(t *testing.T) {
		m.SMTP.SetDelay(100 * time.Millisecond)
		defer m.SMTP.SetDelay(0)
		c := login(t)
		start := time.Now()
		if err := c.Mail(mailbox, nil); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) < 100*time.Millisecond {
			t.Error("reply was not delayed")
		}
	})
}
