package fakegoogle

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"
)

// jwtConfigFromJSON does what golang.org/x/oauth2/google.JWTConfigFromJSON
// does (google.go, credentialsFile.jwtConfig in v0.38.0). That package
// cannot be imported here: it needs cloud.google.com/go/compute/metadata,
// which is not in go.mod.
func jwtConfigFromJSON(t *testing.T, js []byte, scopes ...string) *jwt.Config {
	t.Helper()
	var f struct {
		Type         string `json:"type"`
		ClientEmail  string `json:"client_email"`
		PrivateKeyID string `json:"private_key_id"`
		PrivateKey   string `json:"private_key"`
		TokenURL     string `json:"token_uri"`
	}
	if err := json.Unmarshal(js, &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != "service_account" {
		t.Fatalf("google: read JWT from JSON credentials: 'type' field is %q (expected \"service_account\")", f.Type)
	}
	return &jwt.Config{Email: f.ClientEmail, PrivateKey: []byte(f.PrivateKey), PrivateKeyID: f.PrivateKeyID, Scopes: scopes, TokenURL: f.TokenURL}
}

// testKeys are made once: RSA key generation is the slow part of these tests.
var testKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var keys [2]*rsa.PrivateKey
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[i] = k
	}
	return keys
})

const testServiceAccount = "relay@fake-project.iam.gserviceaccount.com"

// delegated starts the fakes with a service account that has domain-wide
// delegation for Gmail, and returns its JWT config impersonating testUser.
func delegated(t *testing.T) (*Google, *ServiceAccount, *jwt.Config) {
	t.Helper()
	g := startGoogle(t)
	key := testKeys()[0]
	sa := &ServiceAccount{ClientEmail: testServiceAccount, ClientID: "104200000000000000001", KeyID: "k1", Key: key}
	var err error
	sa.JSON, err = ServiceAccountJSON(key, sa.KeyID, sa.ClientEmail, sa.ClientID, "fake-project", g.AuthorizeURL, g.TokenURL)
	if err != nil {
		t.Fatal(err)
	}
	g.OAuth.RegisterServiceAccount(sa.ClientEmail, sa.ClientID, &key.PublicKey)
	g.OAuth.GrantDelegation(sa.ClientID, MailScope)
	cfg := jwtConfigFromJSON(t, sa.JSON, MailScope)
	cfg.Subject = testUser
	return g, sa, cfg
}

// wantJWTError checks the reply to a refused assertion (golang.org/x/oauth2/jwt
// leaves the body unparsed).
func wantJWTError(t *testing.T, err error, status int, code, description string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("want *oauth2.RetrieveError, got %v", err)
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(re.Body, &body); err != nil {
		t.Fatalf("body %q: %v", re.Body, err)
	}
	if re.Response.StatusCode != status || body.Error != code || body.Description != description {
		t.Fatalf("got %d %q %q, want %d %q %q", re.Response.StatusCode, body.Error, body.Description, status, code, description)
	}
}

func TestServiceAccount_KeyFileFormat(t *testing.T) {
	g := startGoogle(t)
	sa, err := g.OAuth.NewServiceAccount(testServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]string
	if err := json.Unmarshal(sa.JSON, &f); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"type": "service_account", "project_id": "fake-project", "private_key_id": sa.KeyID,
		"client_email": testServiceAccount, "client_id": sa.ClientID,
		"auth_uri": g.AuthorizeURL, "token_uri": g.TokenURL, "universe_domain": "googleapis.com",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q", k, f[k], v)
		}
	}
	block, _ := pem.Decode([]byte(f["private_key"]))
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("private_key is not a PKCS #8 PEM block: %q", f["private_key"])
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatal(err)
	}
	// NewServiceAccount registered the account: its own token works.
	if _, err := jwtConfigFromJSON(t, sa.JSON, MailScope).TokenSource(context.Background()).Token(); err != nil {
		t.Fatal(err)
	}
}

func TestServiceAccount_DelegatedToken(t *testing.T) {
	g, _, cfg := delegated(t)
	tok, err := cfg.TokenSource(context.Background()).Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 59*time.Minute || tok.Extra("refresh_token") != nil {
		t.Fatalf("token %+v", tok)
	}
	email, scopes, ok := g.OAuth.CheckAccess(tok.AccessToken)
	if !ok || email != testUser || !contains(scopes, MailScope) {
		t.Fatalf("CheckAccess = %q %v %v", email, scopes, ok)
	}
	// Any user of the domain can be impersonated.
	g.OAuth.AddUser("bob@example.test")
	cfg.Subject = "bob@example.test"
	tok, err = cfg.TokenSource(context.Background()).Token()
	if err != nil {
		t.Fatal(err)
	}
	if email, _, _ := g.OAuth.CheckAccess(tok.AccessToken); email != "bob@example.test" {
		t.Fatalf("impersonated %q", email)
	}
	if n := g.OAuth.Requests(GrantJWTBearer); n != 2 {
		t.Fatalf("%d jwt-bearer requests", n)
	}
}

func TestServiceAccount_Refusals(t *testing.T) {
	tests := []struct {
		name        string
		change      func(g *Google, sa *ServiceAccount, cfg *jwt.Config)
		status      int
		code, descr string
	}{
		{"bad signature", func(g *Google, sa *ServiceAccount, _ *jwt.Config) {
			// The key was rotated: Google no longer has the file's key.
			g.OAuth.RegisterServiceAccount(sa.ClientEmail, sa.ClientID, &testKeys()[1].PublicKey)
		}, 400, "invalid_grant", "Invalid JWT Signature."},
		{"no delegation", func(g *Google, _ *ServiceAccount, cfg *jwt.Config) {
			cfg.Scopes = []string{MailScope, "https://www.googleapis.com/auth/gmail.send"}
		}, 401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."},
		{"unknown user", func(_ *Google, _ *ServiceAccount, cfg *jwt.Config) {
			cfg.Subject = "nobody@example.test"
		}, 400, "invalid_grant", "Invalid email or User ID"},
		{"wrong audience", func(_ *Google, _ *ServiceAccount, cfg *jwt.Config) {
			cfg.Audience = "https://oauth2.googleapis.com/token"
		}, 400, "invalid_grant", "Invalid JWT: Failed audience check."},
		{"too long-lived", func(_ *Google, _ *ServiceAccount, cfg *jwt.Config) {
			cfg.Expires = 2 * time.Hour
		}, 400, "invalid_grant", textBadTime},
		{"no scope", func(_ *Google, _ *ServiceAccount, cfg *jwt.Config) {
			cfg.Scopes = nil
		}, 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, sa, cfg := delegated(t)
			tc.change(g, sa, cfg)
			_, err := cfg.TokenSource(context.Background()).Token()
			wantJWTError(t, err, tc.status, tc.code, tc.descr)
		})
	}
}

func TestServiceAccount_RegisterPEM(t *testing.T) {
	g := startGoogle(t)
	key := testKeys()[1]
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := g.OAuth.RegisterServiceAccountPEM(testServiceAccount, "42", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err != nil {
		t.Fatal(err)
	}
	g.OAuth.GrantDelegation("42", MailScope)
	js, err := ServiceAccountJSON(key, "k1", testServiceAccount, "42", "fake-project", g.AuthorizeURL, g.TokenURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := jwtConfigFromJSON(t, js, MailScope)
	cfg.Subject = testUser
	if _, err := cfg.TokenSource(context.Background()).Token(); err != nil {
		t.Fatal(err)
	}
}
