package fakem365

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// testAssertion is a client assertion built here, independently of the
// relay's encoder, so each can be checked against the other.
type testAssertion struct {
	header map[string]any
	claims map[string]any
	alg    string          // RS256 or PS256
	key    *rsa.PrivateKey // signs it
}

func newTestAssertion(cc *ClientCertificate, clientID, aud string, now time.Time) testAssertion {
	s256 := sha256.Sum256(cc.Cert.Raw)
	s1 := sha1.Sum(cc.Cert.Raw)
	return testAssertion{
		header: map[string]any{"alg": "RS256", "typ": "JWT",
			"x5t#S256": base64.RawURLEncoding.EncodeToString(s256[:]), "x5t": base64.RawURLEncoding.EncodeToString(s1[:])},
		claims: map[string]any{"aud": aud, "iss": clientID, "sub": clientID, "jti": randomToken("jti-"),
			"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()},
		alg: "RS256", key: cc.Key,
	}
}

func (a testAssertion) encode(t *testing.T) string {
	t.Helper()
	h := maps.Clone(a.header)
	h["alg"] = a.alg
	hb, _ := json.Marshal(h)
	cb, _ := json.Marshal(a.claims)
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	d := sha256.Sum256([]byte(signed))
	var sig []byte
	var err error
	if a.alg == "PS256" {
		sig, err = rsa.SignPSS(rand.Reader, a.key, crypto.SHA256, d[:], nil)
	} else {
		sig, err = rsa.SignPKCS1v15(nil, a.key, crypto.SHA256, d[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// requestWithAssertion asks for an app-only token with assertion (none when "").
func requestWithAssertion(tokenURL, clientID, assertion string) (*oauth2.Token, error) {
	cc := clientcredentials.Config{ClientID: clientID, TokenURL: tokenURL,
		Scopes: []string{"https://outlook.office365.com/.default"}, AuthStyle: oauth2.AuthStyleInParams}
	if assertion != "" {
		cc.EndpointParams = map[string][]string{"client_assertion_type": {clientAssertionType}, "client_assertion": {assertion}}
	}
	return cc.Token(context.Background())
}

func aadstsOf(err error) string {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return ""
	}
	var body struct {
		ErrorCodes []int `json:"error_codes"`
	}
	json.Unmarshal(re.Body, &body)
	if len(body.ErrorCodes) == 0 {
		return ""
	}
	return fmt.Sprintf("AADSTS%d", body.ErrorCodes[0])
}

func TestFake_ClientAssertionChecked(t *testing.T) {
	m := start(t)
	tokenURL := m.Entra.URL + "/contoso.test/oauth2/v2.0/token"
	good, err := NewClientCertificate("oauthrelay", time.Now().Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewClientCertificate("someone else", time.Now().Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	m.Entra.RegisterCertificate("app", good.Cert)
	now := time.Now()

	for _, tc := range []struct {
		name string
		mod  func(a *testAssertion)
		want string // AADSTS code, "" for a token
	}{
		{"RS256 with both thumbprints", func(a *testAssertion) {}, ""},
		{"PS256 with x5t#S256 only", func(a *testAssertion) { a.alg = "PS256"; delete(a.header, "x5t") }, ""},
		{"x5t (SHA-1) only", func(a *testAssertion) { delete(a.header, "x5t#S256") }, ""},
		{"signed with another key", func(a *testAssertion) { a.key = other.Key }, "AADSTS700027"},
		{"unregistered certificate", func(a *testAssertion) {
			*a = newTestAssertion(other, "app", tokenURL, now)
		}, "AADSTS700027"},
		{"no thumbprint", func(a *testAssertion) { delete(a.header, "x5t"); delete(a.header, "x5t#S256") }, "AADSTS700027"},
		{"wrong aud", func(a *testAssertion) { a.claims["aud"] = "https://login.microsoftonline.com/other/oauth2/v2.0/token" }, "AADSTS700023"},
		{"iss is not the client", func(a *testAssertion) { a.claims["iss"] = "other-app" }, "AADSTS700021"},
		{"sub is not the client", func(a *testAssertion) { a.claims["sub"] = "other-app" }, "AADSTS700021"},
		{"expired", func(a *testAssertion) {
			a.claims["nbf"], a.claims["iat"], a.claims["exp"] = now.Add(-20*time.Minute).Unix(), now.Add(-20*time.Minute).Unix(), now.Add(-11*time.Minute).Unix()
		}, "AADSTS700024"},
		{"not yet valid", func(a *testAssertion) {
			a.claims["nbf"], a.claims["iat"], a.claims["exp"] = now.Add(7*time.Minute).Unix(), now.Add(7*time.Minute).Unix(), now.Add(12*time.Minute).Unix()
		}, "AADSTS700024"},
		{"within the 5 minute skew", func(a *testAssertion) {
			a.claims["nbf"], a.claims["iat"], a.claims["exp"] = now.Add(2*time.Minute).Unix(), now.Add(2*time.Minute).Unix(), now.Add(7*time.Minute).Unix()
		}, ""},
		{"valid for an hour", func(a *testAssertion) { a.claims["exp"] = now.Add(time.Hour).Unix() }, "AADSTS700024"},
		{"no exp", func(a *testAssertion) { delete(a.claims, "exp") }, "AADSTS50027"},
		{"no jti", func(a *testAssertion) { delete(a.claims, "jti") }, "AADSTS50027"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAssertion(good, "app", tokenURL, now)
			tc.mod(&a)
			tok, err := requestWithAssertion(tokenURL, "app", a.encode(t))
			if got := aadstsOf(err); got != tc.want || (tc.want == "" && err != nil) {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
			if tc.want == "" {
				if g, ok := m.Entra.CheckAccess(tok.AccessToken); !ok || !g.AppOnly || g.ClientID != "app" {
					t.Errorf("want an app-only token for app, got %+v", g)
				}
			}
		})
	}

	t.Run("replayed jti", func(t *testing.T) {
		jwt := newTestAssertion(good, "app", tokenURL, now).encode(t)
		if _, err := requestWithAssertion(tokenURL, "app", jwt); err != nil {
			t.Fatal(err)
		}
		if _, err := requestWithAssertion(tokenURL, "app", jwt); aadstsOf(err) != "AADSTS50027" {
			t.Fatalf("replay: got %v", err)
		}
	})
	t.Run("no credential", func(t *testing.T) {
		_, err := requestWithAssertion(tokenURL, "app", "")
		if aadstsOf(err) != "AADSTS7000218" || !strings.Contains(err.Error(), "'client_assertion' or 'client_secret'") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong assertion type", func(t *testing.T) {
		cc := clientcredentials.Config{ClientID: "app", TokenURL: tokenURL, Scopes: []string{"https://outlook.office365.com/.default"},
			AuthStyle: oauth2.AuthStyleInParams, EndpointParams: map[string][]string{
				"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:saml2-bearer"},
				"client_assertion":      {newTestAssertion(good, "app", tokenURL, now).encode(t)}}}
		if _, err := cc.Token(context.Background()); aadstsOf(err) != "AADSTS50027" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("rotation: a second certificate works beside the first", func(t *testing.T) {
		m.Entra.RegisterCertificate("app", other.Cert)
		if _, err := requestWithAssertion(tokenURL, "app", newTestAssertion(other, "app", tokenURL, now).encode(t)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewClientCertificate_NotAfter(t *testing.T) {
	past := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	cc, err := NewClientCertificate("expired", past)
	if err != nil {
		t.Fatal(err)
	}
	if !cc.Cert.NotAfter.Equal(past) || !cc.Cert.NotBefore.Before(past) {
		t.Errorf("validity %v – %v, want it to end at %v", cc.Cert.NotBefore, cc.Cert.NotAfter, past)
	}
	if !strings.Contains(string(cc.KeyPEM), "BEGIN PRIVATE KEY") || !strings.Contains(string(cc.CertPEM), "BEGIN CERTIFICATE") {
		t.Error("want PEM certificate and PKCS#8 key")
	}
}

func TestReadCertificate_FromAFileWithTheKeyFirst(t *testing.T) {
	cc, err := NewClientCertificate("oauthrelay", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "both.pem")
	os.WriteFile(file, append(append([]byte{}, cc.KeyPEM...), cc.CertPEM...), 0o600)
	got, err := ReadCertificate(file)
	if err != nil || !got.Equal(cc.Cert) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ReadCertificate(filepath.Join(t.TempDir(), "none.pem")); err == nil {
		t.Error("no error for a missing file")
	}
}
