package fakem365

// Certificate credentials: a client_credentials request authenticated by
// a client assertion (a JWT signed with the key of a certificate
// registered on the app) instead of a client secret, checked the way
// https://learn.microsoft.com/entra/identity-platform/certificate-credentials
// describes it.
//
// Entra's answers, as documented (reference-error-codes, the Azure SDKs'
// troubleshooting guides) or seen in the wild:
//   - 700027 "Client assertion contains an invalid signature" (also for an
//     unknown thumbprint: "[Reason - The key was not found.]")
//   - 700024 "Client assertion is not within its valid time range."
//   - 700021 iss/sub not the client_id; 700023 aud not this endpoint
//   - 50027 "JWT token is invalid or malformed." (also used here, an
//     assumption, for a replayed jti: Entra's answer to one is undocumented)
//   - 7000218 no client_assertion and no client_secret.
//
// The fake is stricter than Entra in one way on purpose: an assertion
// valid for more than 10 minutes is refused (Microsoft asks for "5-10
// minutes after nbf at most" but does not enforce it), so the relay keeps
// to what Microsoft asks.

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"strings"
	"time"
)

// clientAssertionType is RFC 7523's client_assertion_type for a JWT.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Assertion limits the fake enforces.
const (
	maxAssertionLifetime = 10 * time.Minute
	assertionSkew        = 5 * time.Minute
)

// RegisterCertificate uploads cert to the app registration clientID
// (Certificates & secrets): client assertions signed with its key are
// accepted, and a request from clientID without any credential is refused
// with AADSTS7000218. Several may be registered (rotation).
func (e *Entra) RegisterCertificate(clientID string, cert *x509.Certificate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.certs[clientID] = append(e.certs[clientID], cert)
}

// UnregisterCertificates removes every certificate of clientID.
func (e *Entra) UnregisterCertificates(clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.certs, clientID)
}

// assertionFault is an error answer to a client assertion.
type assertionFault struct {
	code int
	text string
}

// checkAssertion verifies a client_credentials request's client
// assertion for clientID, sent to tokenURL; caller holds e.mu.
func (e *Entra) checkAssertion(f url.Values, clientID, tokenURL string) *assertionFault {
	bad := func(code int, format string, args ...any) *assertionFault {
		return &assertionFault{code, fmt.Sprintf(format, args...)}
	}
	if t := f.Get("client_assertion_type"); t != clientAssertionType {
		return bad(50027, "Invalid client_assertion_type %q; expected %s.", t, clientAssertionType)
	}
	parts := strings.Split(f.Get("client_assertion"), ".")
	if len(parts) != 3 {
		return bad(50027, "JWT token is invalid or malformed.")
	}
	var header struct {
		Alg     string `json:"alg"`
		Typ     string `json:"typ"`
		X5t     string `json:"x5t"`
		X5tS256 string `json:"x5t#S256"`
	}
	var claims struct {
		Aud string   `json:"aud"`
		Iss string   `json:"iss"`
		Sub string   `json:"sub"`
		Jti string   `json:"jti"`
		Exp *float64 `json:"exp"`
		Nbf *float64 `json:"nbf"`
		Iat *float64 `json:"iat"`
	}
	if decodeSegment(parts[0], &header) != nil || decodeSegment(parts[1], &claims) != nil {
		return bad(50027, "JWT token is invalid or malformed.")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return bad(50027, "JWT token is invalid or malformed.")
	}
	cert := e.findCertificate(clientID, header.X5tS256, header.X5t)
	if cert == nil {
		return bad(700027, "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '%s'", thumbprintHex(header.X5t, header.X5tS256))
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return bad(700027, "Client assertion contains an invalid signature. [Reason - The key is not an RSA key.]")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch header.Alg {
	case "RS256":
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
	case "PS256":
		err = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, nil)
	default:
		return bad(700027, "Client assertion contains an invalid signature. [Reason - The algorithm %q is not supported.]", header.Alg)
	}
	if err != nil {
		return bad(700027, "Client assertion contains an invalid signature. [Reason - The signature does not verify with the key of the certificate with this thumbprint.]")
	}
	if claims.Iss != clientID || claims.Sub != clientID {
		return bad(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
	}
	if claims.Aud != tokenURL {
		return bad(700023, "Client assertion audience claim does not match Realm issuer. Audience %q, expected %q.", claims.Aud, tokenURL)
	}
	now := e.now()
	if claims.Exp == nil {
		return bad(50027, "JWT token is invalid or malformed: no exp claim.")
	}
	exp := time.Unix(int64(*claims.Exp), 0)
	start := exp
	if claims.Nbf != nil {
		start = time.Unix(int64(*claims.Nbf), 0)
	} else if claims.Iat != nil {
		start = time.Unix(int64(*claims.Iat), 0)
	}
	if claims.Nbf == nil && claims.Iat == nil || exp.Sub(start) > maxAssertionLifetime {
		return bad(700024, "Client assertion is not within its valid time range: it must be valid for at most %v after nbf. Assertion valid from %s, expiry time of assertion %s.", maxAssertionLifetime, start.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339))
	}
	if !now.Before(exp) || now.Add(assertionSkew).Before(start) {
		return bad(700024, "Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.", now.UTC().Format(time.RFC3339), start.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339))
	}
	if claims.Jti == "" {
		return bad(50027, "JWT token is invalid or malformed: no jti claim.")
	}
	for j, until := range e.jtis { // forget assertions that can no longer be replayed
		if now.After(until) {
			delete(e.jtis, j)
		}
	}
	if _, seen := e.jtis[claims.Jti]; seen {
		return bad(50027, "JWT token is invalid: the client assertion with jti %q was already used.", claims.Jti)
	}
	e.jtis[claims.Jti] = exp
	return nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// findCertificate is clientID's registered certificate with thumbprint
// x5tS256 (SHA-256) or, failing that, x5t (SHA-1).
func (e *Entra) findCertificate(clientID, x5tS256, x5t string) *x509.Certificate {
	for _, c := range e.certs[clientID] {
		s256 := sha256.Sum256(c.Raw)
		s1 := sha1.Sum(c.Raw)
		if x5tS256 != "" && x5tS256 == base64.RawURLEncoding.EncodeToString(s256[:]) ||
			x5t != "" && x5t == base64.RawURLEncoding.EncodeToString(s1[:]) {
			return c
		}
	}
	return nil
}

// thumbprintHex renders the client's thumbprint as Entra's messages do.
func thumbprintHex(x5t, x5tS256 string) string {
	for _, t := range []string{x5t, x5tS256} {
		if b, err := base64.RawURLEncoding.DecodeString(t); err == nil && len(b) > 0 {
			return fmt.Sprintf("%X", b)
		}
	}
	return ""
}

// ReadCertificate reads the first PEM certificate in file (what an admin
// uploads to the app registration).
func ReadCertificate(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", file)
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// ClientCertificate is a self-signed RSA certificate and its key, as
// `openssl req -x509 -newkey rsa:2048 -nodes` makes them, for tests and
// the demo.
type ClientCertificate struct {
	Cert    *x509.Certificate
	Key     *rsa.PrivateKey
	CertPEM []byte // "CERTIFICATE"
	KeyPEM  []byte // PKCS#8 "PRIVATE KEY"
}

// NewClientCertificate makes a 2048-bit RSA key and a self-signed
// certificate for it, valid from an hour ago until notAfter.
func NewClientCertificate(commonName string, notAfter time.Time) (*ClientCertificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	notBefore := time.Now().Add(-time.Hour)
	if !notAfter.After(notBefore) { // an already expired certificate
		notBefore = notAfter.Add(-24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &ClientCertificate{Cert: cert, Key: key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})}, nil
}
