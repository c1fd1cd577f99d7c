package tokens_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// writePair writes cc's certificate and key to dir as oauthrelay.crt and
// oauthrelay.key and returns their paths.
func writePair(t *testing.T, dir string, cc *fakem365.ClientCertificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "oauthrelay.crt"), filepath.Join(dir, "oauthrelay.key")
	if err := os.WriteFile(certFile, cc.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, cc.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func newClientCert(t *testing.T, notAfter time.Time) *fakem365.ClientCertificate {
	t.Helper()
	cc, err := fakem365.NewClientCertificate("oauthrelay", notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

func decodeJSONSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCertificate_AssertionAsMicrosoftDocumentsIt(t *testing.T) {
	cc := newClientCert(t, time.Now().Add(365*24*time.Hour))
	certFile, keyFile := writePair(t, t.TempDir(), cc)
	c, err := tokens.LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	const tokenURL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
	now := time.Unix(1_800_000_000, 0)
	jwt, err := c.Assertion("client-1", tokenURL, now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS compact serialization: %q", jwt)
	}
	h := decodeJSONSegment(t, parts[0])
	s256, s1 := sha256.Sum256(cc.Cert.Raw), sha1.Sum(cc.Cert.Raw)
	for k, want := range map[string]string{"alg": "RS256", "typ": "JWT",
		"x5t#S256": base64.RawURLEncoding.EncodeToString(s256[:]), "x5t": base64.RawURLEncoding.EncodeToString(s1[:])} {
		if h[k] != want {
			t.Errorf("header %s = %v, want %v", k, h[k], want)
		}
	}
	cl := decodeJSONSegment(t, parts[1])
	for k, want := range map[string]any{"aud": tokenURL, "iss": "client-1", "sub": "client-1",
		"nbf": float64(now.Unix()), "iat": float64(now.Unix())} {
		if cl[k] != want {
			t.Errorf("claim %s = %v, want %v", k, cl[k], want)
		}
	}
	if exp, _ := cl["exp"].(float64); exp <= float64(now.Unix()) || exp > float64(now.Add(10*time.Minute).Unix()) {
		t.Errorf("exp %v: want after nbf and at most 10 minutes later", cl["exp"])
	}
	if jti, _ := cl["jti"].(string); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(jti) {
		t.Errorf("jti %q is not a random UUID", jti)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(cc.Cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, d[:], sig); err != nil {
		t.Errorf("signature does not verify with the certificate's public key: %v", err)
	}
	again, _ := c.Assertion("client-1", tokenURL, now)
	if decodeJSONSegment(t, strings.Split(again, ".")[1])["jti"] == cl["jti"] {
		t.Error("two assertions share a jti")
	}
}

func TestLoadCertificate_Problems(t *testing.T) {
	dir := t.TempDir()
	cc := newClientCert(t, time.Now().Add(365*24*time.Hour))
	other := newClientCert(t, time.Now().Add(365*24*time.Hour))
	certFile, keyFile := writePair(t, dir, cc)
	write := func(name string, data ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Join(data, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pkcs1 := write("pkcs1.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(cc.Key)}))
	both := write("both.pem", cc.CertPEM, cc.KeyPEM)
	otherKey := write("other.key", other.KeyPEM)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecKey := write("ec.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
	encrypted := write("enc.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	der := write("cert.cer", cc.Cert.Raw)

	for _, tc := range []struct {
		name              string
		certFile, keyFile string
		want              []string // in the error, "" for none
	}{
		{"PKCS#8 key", certFile, keyFile, nil},
		{"PKCS#1 key", certFile, pkcs1, nil},
		{"one file holding both", both, both, nil},
		{"key of another certificate", certFile, otherKey, []string{"client_key_file", otherKey, "does not belong to the certificate"}},
		{"key file given as certificate", keyFile, keyFile, []string{"client_certificate_file", keyFile, "no PEM certificate"}},
		{"certificate given as key", certFile, certFile, []string{"client_key_file", certFile, "no PEM private key"}},
		{"ECDSA key", certFile, ecKey, []string{"client_key_file", ecKey, "ECDSA", "RSA", "openssl req -x509 -newkey rsa:2048"}},
		{"encrypted key", certFile, encrypted, []string{"client_key_file", "encrypted", "openssl pkey"}},
		{"DER certificate", der, keyFile, []string{"client_certificate_file", "DER", "openssl x509 -inform der"}},
		{"missing file", filepath.Join(dir, "nope.crt"), keyFile, []string{"client_certificate_file", "nope.crt", "cannot be read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tokens.LoadCertificate(tc.certFile, tc.keyFile)
			if tc.want == nil {
				if err != nil || c.Leaf == nil {
					t.Fatalf("want the pair loaded, got %v", err)
				}
				return
			}
			var ce *tokens.CertificateError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *CertificateError, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCheckCertificate_Dates(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name           string
		notAfter       time.Time
		wantErr, warns bool
	}{
		{"a year left", now.Add(365 * 24 * time.Hour), false, false},
		{"12 days left", now.Add(12*24*time.Hour + time.Hour), false, true},
		{"expired", now.Add(-24 * time.Hour), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := writePair(t, t.TempDir(), newClientCert(t, tc.notAfter))
			res, err := tokens.CheckCertificate(certFile, keyFile, now, 30*24*time.Hour)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr && !strings.Contains(err.Error(), "expired on "+tc.notAfter.UTC().Format("2006-01-02")) {
				t.Errorf("error %q does not say when it expired", err)
			}
			if (res.Warning != "") != tc.warns {
				t.Errorf("warning %q", res.Warning)
			}
			if tc.warns && !strings.Contains(res.Warning, "(in 12 days)") {
				t.Errorf("warning %q does not say how long is left", res.Warning)
			}
		})
	}
}

// formRecorder records the token requests' forms on their way to Entra.
type formRecorder struct {
	mu    sync.Mutex
	forms []url.Values
}

func (r *formRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	b, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(b))
	f, _ := url.ParseQuery(string(b))
	r.mu.Lock()
	r.forms = append(r.forms, f)
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (r *formRecorder) last() url.Values {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.forms[len(r.forms)-1]
}

// certEnv is an app-only account with a certificate, against the fake.
func certEnv(t *testing.T, notAfter time.Time, register bool) (*env, *fakem365.ClientCertificate) {
	t.Helper()
	e := newEnv(t, tokens.FlowClientCredentials)
	e.account.ClientSecret = ""
	cc := newClientCert(t, notAfter)
	e.account.CertFile, e.account.KeyFile = writePair(t, t.TempDir(), cc)
	if register {
		e.fake.Entra.RegisterCertificate("client-2", cc.Cert)
	}
	e.account.ClientID = "client-2"
	return e, cc
}

func TestManager_CertificateSignsIn(t *testing.T) {
	e, cc := certEnv(t, time.Now().Add(365*24*time.Hour), true)
	rec := &formRecorder{}
	m := e.manager(t, func(o *tokens.Options) { o.HTTPClient = &http.Client{Transport: rec} })
	tok, err := m.Token(context.Background(), "helpdesk")
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := e.fake.Entra.CheckAccess(tok.AccessToken); !ok || !g.AppOnly || g.ClientID != "client-2" {
		t.Fatalf("want an app-only token, got %+v", g)
	}
	f := rec.last()
	if f.Has("client_secret") || f.Get("client_assertion_type") != tokens.ClientAssertionType || f.Get("client_assertion") == "" ||
		f.Get("grant_type") != "client_credentials" || f.Get("client_id") != "client-2" {
		t.Errorf("token request form: %v", f)
	}
	st := m.State("helpdesk")
	if st.State != tokens.Connected || st.Credential != "certificate" || st.Provider != "microsoft" || st.Cloud != "global" ||
		!st.CertificateExpiry.Equal(cc.Cert.NotAfter) || st.CertificateWarning != "" {
		t.Errorf("state %+v", st)
	}
	// A fresh assertion for every request: the fake refuses a replayed jti.
	if err := m.ForceRefresh(context.Background(), "helpdesk"); err != nil {
		t.Fatal(err)
	}
}

func TestManager_CertificateNotRegistered(t *testing.T) {
	e, _ := certEnv(t, time.Now().Add(365*24*time.Hour), false)
	m := e.manager(t, nil)
	_, err := m.Token(context.Background(), "helpdesk")
	var ae *tokens.AccountError
	if !errors.As(err, &ae) || ae.State != tokens.Misconfigured || ae.Explanation.Code != "AADSTS700027" {
		t.Fatalf("got %v", err)
	}
	for _, w := range []string{"upload the certificate", "not the key", "Certificates & secrets", e.account.CertFile} {
		if !strings.Contains(ae.Explanation.Action, w) {
			t.Errorf("action %q lacks %q", ae.Explanation.Action, w)
		}
	}
}

func TestManager_CertificateRenewedWithoutRestart(t *testing.T) {
	e, _ := certEnv(t, time.Now().Add(365*24*time.Hour), false)
	m := e.manager(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	if _, err := m.Token(context.Background(), "helpdesk"); err == nil {
		t.Fatal("an unregistered certificate signed in")
	}
	// The admin makes a new pair, uploads it, and replaces the files.
	renewed := newClientCert(t, time.Now().Add(2*365*24*time.Hour))
	e.fake.Entra.RegisterCertificate("client-2", renewed.Cert)
	os.WriteFile(e.account.CertFile, renewed.CertPEM, 0o644)
	os.WriteFile(e.account.KeyFile, renewed.KeyPEM, 0o600)
	deadline := time.Now().Add(5 * time.Second)
	for m.State("helpdesk").State != tokens.Connected {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not picked up: %+v", m.State("helpdesk"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := m.State("helpdesk").CertificateExpiry; !got.Equal(renewed.Cert.NotAfter) {
		t.Errorf("expiry %v, want the renewed certificate's %v", got, renewed.Cert.NotAfter)
	}
}

// A certificate renewed on a connected account (its token still good)
// shows its new expiry within seconds, not at the next token request.
func TestManager_RenewedCertificateExpiryShowsAtOnce(t *testing.T) {
	e, _ := certEnv(t, time.Now().Add(10*24*time.Hour), true)
	m := e.manager(t, func(o *tokens.Options) { o.WatchInterval = 20 * time.Millisecond })
	if _, err := m.Token(context.Background(), "helpdesk"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	renewed := newClientCert(t, time.Now().Add(2*365*24*time.Hour))
	e.fake.Entra.RegisterCertificate("client-2", renewed.Cert)
	os.WriteFile(e.account.CertFile, renewed.CertPEM, 0o644)
	os.WriteFile(e.account.KeyFile, renewed.KeyPEM, 0o600)
	deadline := time.Now().Add(5 * time.Second)
	for !m.State("helpdesk").CertificateExpiry.Equal(renewed.Cert.NotAfter) {
		if time.Now().After(deadline) {
			t.Fatalf("still shows %v after the renewal", m.State("helpdesk").CertificateExpiry)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if w := m.State("helpdesk").CertificateWarning; w != "" {
		t.Errorf("the renewed certificate still warns: %s", w)
	}
}

func TestManager_CertificateExpiry(t *testing.T) {
	t.Run("expires soon: a warning, still signs in", func(t *testing.T) {
		e, _ := certEnv(t, time.Now().Add(10*24*time.Hour), true)
		m := e.manager(t, nil)
		if _, err := m.Token(context.Background(), "helpdesk"); err != nil {
			t.Fatal(err)
		}
		st := m.State("helpdesk")
		if st.State != tokens.Connected || !strings.Contains(st.CertificateWarning, "expires on") || !strings.Contains(st.CertificateWarning, "Certificates & secrets") {
			t.Errorf("state %+v", st)
		}
	})
	t.Run("expired: misconfigured from the start, no request", func(t *testing.T) {
		e, _ := certEnv(t, time.Now().Add(-time.Hour), true)
		m := e.manager(t, nil)
		st := m.State("helpdesk")
		if st.State != tokens.Misconfigured || !strings.Contains(st.Explanation.Action, "client_certificate_file") ||
			!strings.Contains(st.CertificateWarning, "expired on") {
			t.Errorf("state %+v", st)
		}
		if _, err := m.Token(context.Background(), "helpdesk"); err == nil {
			t.Error("an expired certificate signed in")
		}
		if n := e.fake.Entra.Requests(fakem365.GrantClientCredentials); n != 0 {
			t.Errorf("%d requests sent with an expired certificate", n)
		}
	})
}

func TestExplainAADSTS_CertificateCodes(t *testing.T) {
	a := tokens.Account{Name: "helpdesk", Tenant: "contoso.test", ClientID: "c", Flow: tokens.FlowClientCredentials,
		CertFile: "/etc/oauthrelay/oauthrelay.crt", KeyFile: "/etc/oauthrelay/oauthrelay.key", Authority: "https://login.microsoftonline.com"}
	for code, want := range map[int][]string{
		700027:  {"upload the certificate", "not the key", "Certificates & secrets"},
		700024:  {"clock"},
		7000218: {"client_certificate_file"},
		7000215: {"Certificates & secrets"},
		700021:  {"client_id"},
		700023:  {"tenant"},
	} {
		st, ex := tokens.ExplainAADSTS(code, "invalid_client", a, "")
		if st != tokens.Misconfigured {
			t.Errorf("AADSTS%d: state %s", code, st)
		}
		for _, w := range want {
			if !strings.Contains(ex.Title+ex.Detail+ex.Action, w) {
				t.Errorf("AADSTS%d: %q lacks %q", code, ex, w)
			}
		}
	}
	// A client-secret account keeps its own words.
	a.CertFile, a.KeyFile = "", ""
	if _, ex := tokens.ExplainAADSTS(7000218, "invalid_client", a, ""); !strings.Contains(ex.Action, "client_secret") {
		t.Errorf("secret account: %q", ex)
	}
}
