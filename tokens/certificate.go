package tokens

// Certificate credentials for app-only Microsoft accounts: instead of a
// client secret, the token request carries a client assertion, a JWT the
// relay signs with the private key of a certificate registered on the app
// (Microsoft identity platform application authentication certificate
// credentials, https://learn.microsoft.com/entra/identity-platform/certificate-credentials;
// OpenID Connect Core 9, private_key_jwt; RFC 7523 2.2).

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/credfile"
)

// ClientAssertionType is the token request's client_assertion_type for a
// JWT client assertion (RFC 7523 2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is how long a client assertion is valid. Microsoft:
// "keep it short - 5-10 minutes after nbf at most" (Entra does not enforce
// a limit today). A new one is made for every token request.
const AssertionLifetime = 5 * time.Minute

// Certificate is an app-only account's certificate and private key, read
// from its PEM files. The key stays in this package: others ask for an
// assertion (Assertion), never for the key.
type Certificate struct {
	// Leaf is the certificate registered on the app registration.
	Leaf              *x509.Certificate
	CertFile, KeyFile string
	key               *rsa.PrivateKey
}

// CertificateError says which of an account's credential files is wrong,
// how, and what to do about it: the certificate pair, or a Google service
// account's JSON key.
type CertificateError struct {
	File string // the file at fault
	// Key is the configuration key naming it: "client_certificate_file",
	// "client_key_file" or "service_account_file".
	Key     string
	Problem string
	Fix     string
	Err     error // the underlying error, if any (fs.ErrNotExist, fs.ErrPermission, …)
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("%s %s: %s — %s", e.Key, e.File, e.Problem, e.Fix)
}

func (e *CertificateError) Unwrap() error { return e.Err }

const makeKeyPair = `make a new pair: openssl req -x509 -newkey rsa:2048 -keyout oauthrelay.key -out oauthrelay.crt -days 365 -nodes -subj "/CN=oauthrelay", upload oauthrelay.crt to the app registration (Certificates & secrets), and set client_certificate_file and client_key_file to the two files`

// LoadCertificate reads a PEM certificate and its PEM RSA private key
// (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY", unencrypted). Both
// may be in one file: pass it twice. Any problem is a *CertificateError.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	leaf, err := readLeaf(certFile)
	if err != nil {
		return nil, err
	}
	key, err := readRSAKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, &CertificateError{File: certFile, Key: "client_certificate_file",
			Problem: fmt.Sprintf("the certificate holds a %s public key; Entra ID accepts client assertions signed with RSA only", keyAlgorithm(leaf.PublicKey)),
			Fix:     makeKeyPair}
	}
	if n := key.N.BitLen(); n < 2048 {
		return nil, &CertificateError{File: keyFile, Key: "client_key_file",
			Problem: fmt.Sprintf("is a %d-bit RSA key; Entra ID requires at least 2048 bits", n),
			Fix:     makeKeyPair}
	}
	if !pub.Equal(&key.PublicKey) {
		return nil, &CertificateError{File: keyFile, Key: "client_key_file",
			Problem: "this private key does not belong to the certificate " + certFile + " (" + leaf.Subject.String() + ", SHA-1 thumbprint " + fmt.Sprintf("%X", sha1.Sum(leaf.Raw)) + ")",
			Fix:     "point client_key_file at the key the certificate was made with (the -keyout file of openssl req), or " + makeKeyPair}
	}
	return &Certificate{Leaf: leaf, CertFile: certFile, KeyFile: keyFile, key: key}, nil
}

func readFile(file, key string) ([]byte, error) {
	b, err := credfile.Read(file)
	if err == nil {
		return b, nil
	}
	fix := "check the path and that the relay's user may read it"
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fix = "check the path of " + key
	case errors.Is(err, credfile.ErrNotRegular):
		fix = "name a regular file in " + key
	}
	why := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		why = pe.Err.Error() // the path is named already
	}
	return nil, &CertificateError{File: file, Key: key, Problem: "cannot be read: " + why, Fix: fix, Err: err}
}

// readLeaf returns the first certificate in file.
func readLeaf(file string) (*x509.Certificate, error) {
	const key = "client_certificate_file"
	b, err := readFile(file, key)
	if err != nil {
		return nil, err
	}
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, &CertificateError{File: file, Key: key, Problem: "its CERTIFICATE block cannot be parsed: " + err.Error(),
				Fix: "use the PEM certificate as openssl wrote it (-out of openssl req -x509)"}
		}
		return c, nil
	}
	if _, err := x509.ParseCertificate(b); err == nil {
		return nil, &CertificateError{File: file, Key: key, Problem: "is a DER (binary) certificate, not PEM",
			Fix: "convert it: openssl x509 -inform der -in " + file + " -out oauthrelay.crt, and point client_certificate_file at oauthrelay.crt"}
	}
	return nil, &CertificateError{File: file, Key: key, Problem: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
		Fix: "point client_certificate_file at the certificate (the .crt/.pem registered on the app), not at the key or a .pfx; for a .pfx: openssl pkcs12 -in file.pfx -nokeys -out oauthrelay.crt"}
}

// readRSAKey returns the first private key in file, which must be RSA.
func readRSAKey(file string) (*rsa.PrivateKey, error) {
	const key = "client_key_file"
	b, err := readFile(file, key)
	if err != nil {
		return nil, err
	}
	bad := func(problem, fix string) error {
		return &CertificateError{File: file, Key: key, Problem: problem, Fix: fix}
	}
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if _, enc := blk.Headers["Proc-Type"]; enc || blk.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, bad("the private key is encrypted with a passphrase",
				"write it unencrypted, readable only by the relay's user: openssl pkey -in "+file+" -out oauthrelay.key (then chmod 600 oauthrelay.key)")
		}
		switch blk.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			if err != nil {
				return nil, bad("its RSA PRIVATE KEY block cannot be parsed: "+err.Error(), "use the key as openssl wrote it (-keyout of openssl req)")
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, bad("its PRIVATE KEY block cannot be parsed: "+err.Error(), "use the key as openssl wrote it (-keyout of openssl req)")
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, bad(fmt.Sprintf("is a %s key; Entra ID accepts client assertions signed with RSA only", keyAlgorithm(k)), makeKeyPair)
			}
			return rk, nil
		case "EC PRIVATE KEY":
			return nil, bad("is an ECDSA key; Entra ID accepts client assertions signed with RSA only", makeKeyPair)
		}
	}
	return nil, bad("holds no PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
		"point client_key_file at the private key (the -keyout file of openssl req), not at the certificate; for a .pfx: openssl pkcs12 -in file.pfx -nocerts -nodes -out oauthrelay.key")
}

func keyAlgorithm(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PrivateKey, *rsa.PublicKey:
		return "RSA"
	}
	return fmt.Sprintf("%T", k)
}

// ThumbprintSHA256 is the x5t#S256 of the certificate: base64url of the
// SHA-256 of its DER encoding.
func (c *Certificate) ThumbprintSHA256() string {
	sum := sha256.Sum256(c.Leaf.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ThumbprintSHA1 is the x5t: base64url of the SHA-1 of the DER encoding,
// which older tenants and clouds match the registered key by.
func (c *Certificate) ThumbprintSHA1() string {
	sum := sha1.Sum(c.Leaf.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Assertion returns a client assertion for clientID at tokenURL, valid
// from now for AssertionLifetime, with a fresh jti.
//
// The JWT is encoded here rather than with golang.org/x/oauth2/jws: that
// package is deprecated and its Header has no x5t or x5t#S256, which is how
// Entra ID finds the registered certificate to check the signature with.
//
// Microsoft's page now shows PS256 with x5t#S256; its earlier version
// (learn.microsoft.com/previous-versions/.../certificate-credentials)
// shows RS256 with x5t (SHA-1). This sends RS256 (RSASSA-PKCS1-v1_5,
// SHA-256), long accepted everywhere, with both thumbprints.
func (c *Certificate) Assertion(clientID, tokenURL string, now time.Time) (string, error) {
	header := map[string]string{
		"alg":      "RS256",
		"typ":      "JWT",
		"x5t":      c.ThumbprintSHA1(),
		"x5t#S256": c.ThumbprintSHA256(),
	}
	jti, err := newUUID()
	if err != nil {
		return "", err
	}
	claims := map[string]any{
		"aud": tokenURL,
		"iss": clientID,
		"sub": clientID,
		"jti": jti,
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"exp": now.Add(AssertionLifetime).Unix(),
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(nil, c.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("signing the client assertion: %w", err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// newUUID is a random (version 4) UUID, RFC 9562 5.4.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// CertificateCheck is what CheckCertificate found.
type CertificateCheck struct {
	NotAfter time.Time
	// Warning is set when the certificate expires within the warning
	// window: what to do before it does.
	Warning string
}

// CheckCertificate reads an account's certificate pair as a token request
// would and judges its dates at now: an error when the pair cannot be used
// or the certificate has expired or is not yet valid, a warning when it
// expires within warn.
func CheckCertificate(certFile, keyFile string, now time.Time, warn time.Duration) (CertificateCheck, error) {
	c, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		return CertificateCheck{}, err
	}
	if err := c.validAt(now); err != nil {
		return CertificateCheck{NotAfter: c.Leaf.NotAfter}, err
	}
	return CertificateCheck{NotAfter: c.Leaf.NotAfter, Warning: certificateWarning(c.Leaf.NotAfter, now, warn)}, nil
}

// validAt refuses a certificate outside its validity period: Entra ID
// would refuse the assertion (AADSTS700027, "The key used is expired").
func (c *Certificate) validAt(now time.Time) error {
	switch {
	case now.After(c.Leaf.NotAfter):
		return &CertificateError{File: c.CertFile, Key: "client_certificate_file",
			Problem: "the certificate expired on " + c.Leaf.NotAfter.UTC().Format("2006-01-02"),
			Fix:     makeKeyPair + "; the relay reads the files at its next token request, no restart needed"}
	case now.Before(c.Leaf.NotBefore):
		return &CertificateError{File: c.CertFile, Key: "client_certificate_file",
			Problem: "the certificate is not valid before " + c.Leaf.NotBefore.UTC().Format(time.RFC3339),
			Fix:     "check this machine's clock (timedatectl), or wait until then"}
	}
	return nil
}

// certificateWarning is the warning for a certificate expiring at notAfter,
// "" when that is more than warn after now.
func certificateWarning(notAfter, now time.Time, warn time.Duration) string {
	if notAfter.IsZero() || notAfter.Sub(now) > warn {
		return ""
	}
	todo := "make a new certificate and key, upload the certificate to the app registration (Certificates & secrets), then replace the files named by client_certificate_file and client_key_file; the relay reads them at its next token request, no restart needed"
	day := notAfter.UTC().Format("2006-01-02")
	if !now.Before(notAfter) {
		return "the client certificate expired on " + day + ": " + todo
	}
	days := int(math.Round(notAfter.Sub(now).Hours() / 24)) // a 10-day certificate made a second ago: 10 days
	when := fmt.Sprintf("in %d days", days)
	switch days {
	case 0:
		when = "within a day"
	case 1:
		when = "in 1 day"
	}
	return "the client certificate expires on " + day + " (" + when + "): " + todo
}
