package fakegoogle

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxAssertionLifetime is how far exp may lie after iat. Google documents
// "60 minutes" in its message and refuses beyond 65 (the service-account
// error table), which lets clients that round up pass.
const maxAssertionLifetime = 65 * time.Minute

// clockSkew is how far in the future iat may lie.
const clockSkew = 5 * time.Minute

type serviceAccount struct {
	clientID string
	key      *rsa.PublicKey
}

// RegisterServiceAccount makes the token endpoint take assertions issued
// (iss) by clientEmail and signed with the private half of key. clientID is
// the service account's numeric "client_id", the one an administrator
// grants domain-wide delegation to.
func (o *OAuth) RegisterServiceAccount(clientEmail, clientID string, key *rsa.PublicKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.accounts[strings.ToLower(clientEmail)] = &serviceAccount{clientID: clientID, key: key}
}

// RegisterServiceAccountPEM is RegisterServiceAccount with the public key
// as PEM ("PUBLIC KEY", PKIX) or a certificate ("CERTIFICATE"), as Google
// publishes them.
func (o *OAuth) RegisterServiceAccountPEM(clientEmail, clientID string, pemBytes []byte) error {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return errors.New("fakegoogle: no PEM block")
	}
	var pub any
	var err error
	switch b.Type {
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		pub, err = x509.ParsePKIXPublicKey(b.Bytes)
	}
	if err != nil {
		return err
	}
	key, ok := pub.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("fakegoogle: %T is not an RSA key", pub)
	}
	o.RegisterServiceAccount(clientEmail, clientID, key)
	return nil
}

// GrantDelegation does what a Workspace administrator does under Security >
// API controls > Domain-wide delegation: lets the service account with
// clientID impersonate the domain's users for scopes.
func (o *OAuth) GrantDelegation(clientID string, scopes ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.delegation[clientID] = append(o.delegation[clientID], scopes...)
}

// ServiceAccount is a generated service account and its key file.
type ServiceAccount struct {
	ClientEmail string
	ClientID    string
	KeyID       string
	Key         *rsa.PrivateKey
	// JSON is the key file as the Cloud console downloads it, with its
	// token_uri at the fake; google.JWTConfigFromJSON reads it.
	JSON []byte
}

// NewServiceAccount generates an RSA key for clientEmail, registers the
// account with the fake and returns it with its key file. It does not
// grant delegation (GrantDelegation).
func (o *OAuth) NewServiceAccount(clientEmail string) (*ServiceAccount, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	kid := make([]byte, 20)
	rand.Read(kid)
	sa := &ServiceAccount{
		ClientEmail: clientEmail,
		ClientID:    userID(clientEmail),
		KeyID:       hex.EncodeToString(kid),
		Key:         key,
	}
	_, domain, _ := strings.Cut(clientEmail, "@") // <name>@<project>.iam.gserviceaccount.com
	project, _, _ := strings.Cut(domain, ".")
	sa.JSON, err = ServiceAccountJSON(key, sa.KeyID, clientEmail, sa.ClientID, project, o.AuthorizeURL(), o.TokenURL())
	if err != nil {
		return nil, err
	}
	o.RegisterServiceAccount(clientEmail, sa.ClientID, &key.PublicKey)
	return sa, nil
}

// ServiceAccountJSON writes a service account key file in Google's format
// (the fields, their order and the PKCS #8 key of a downloaded key), with
// auth_uri and token_uri as given.
func ServiceAccountJSON(key *rsa.PrivateKey, keyID, clientEmail, clientID, projectID, authURI, tokenURI string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	f := struct {
		Type                    string `json:"type"`
		ProjectID               string `json:"project_id"`
		PrivateKeyID            string `json:"private_key_id"`
		PrivateKey              string `json:"private_key"`
		ClientEmail             string `json:"client_email"`
		ClientID                string `json:"client_id"`
		AuthURI                 string `json:"auth_uri"`
		TokenURI                string `json:"token_uri"`
		AuthProviderX509CertURL string `json:"auth_provider_x509_cert_url"`
		ClientX509CertURL       string `json:"client_x509_cert_url"`
		UniverseDomain          string `json:"universe_domain"`
	}{
		Type:                    "service_account",
		ProjectID:               projectID,
		PrivateKeyID:            keyID,
		PrivateKey:              string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		ClientEmail:             clientEmail,
		ClientID:                clientID,
		AuthURI:                 authURI,
		TokenURI:                tokenURI,
		AuthProviderX509CertURL: "https://www.googleapis.com/oauth2/v1/certs",
		ClientX509CertURL:       "https://www.googleapis.com/robot/v1/metadata/x509/" + url.PathEscape(clientEmail),
		UniverseDomain:          "googleapis.com",
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Google's replies to a bad assertion (doc.go says where each is from).
const (
	textBadSignature = "Invalid JWT Signature."
	textBadAudience  = "Invalid JWT: Failed audience check."
	textBadTime      = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your 'iat' and 'exp' values and use a clock with skew to account for clock differences between systems."
	textNoScope      = "Invalid OAuth scope or ID token audience provided."
	textUnknownUser  = "Invalid email or User ID"
	textNoDelegation = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."
)

type assertionClaims struct {
	Iss   string `json:"iss"`
	Scope string `json:"scope"`
	Aud   string `json:"aud"`
	Sub   string `json:"sub"`
	Iat   int64  `json:"iat"`
	Exp   int64  `json:"exp"`
}

// jwtBearer handles the service-account grant (RFC 7523): an RS256 JWT
// signed by the account's key, asking for scope on behalf of sub. Caller
// holds o.mu.
func (o *OAuth) jwtBearer(w http.ResponseWriter, assertion string) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		writeError(w, 400, "invalid_request", "Invalid JWT: Token must be a JWT with 3 parts.")
		return
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	var cl assertionClaims
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &cl) != nil {
		writeError(w, 400, "invalid_grant", textBadSignature)
		return
	}
	sa, ok := o.accounts[strings.ToLower(cl.Iss)]
	if !ok {
		writeError(w, 400, "invalid_grant", "Invalid grant: account not found")
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || hdr.Alg != "RS256" || rsa.VerifyPKCS1v15(sa.key, crypto.SHA256, sum[:], sig) != nil {
		writeError(w, 400, "invalid_grant", textBadSignature)
		return
	}
	now := o.now()
	iat, exp := time.Unix(cl.Iat, 0), time.Unix(cl.Exp, 0)
	switch {
	case cl.Aud != o.TokenURL():
		writeError(w, 400, "invalid_grant", textBadAudience)
		return
	case cl.Iat == 0 || cl.Exp == 0 || !exp.After(iat) || exp.Sub(iat) > maxAssertionLifetime ||
		!now.Before(exp) || iat.After(now.Add(clockSkew)):
		writeError(w, 400, "invalid_grant", textBadTime)
		return
	case strings.TrimSpace(cl.Scope) == "":
		writeError(w, 400, "invalid_scope", textNoScope)
		return
	}
	email := cl.Iss
	if cl.Sub != "" && !strings.EqualFold(cl.Sub, cl.Iss) {
		if !o.users[strings.ToLower(cl.Sub)] {
			writeError(w, 400, "invalid_grant", textUnknownUser)
			return
		}
		granted := o.delegation[sa.clientID]
		for _, s := range strings.Fields(cl.Scope) {
			if !contains(granted, s) {
				writeError(w, 401, "unauthorized_client", textNoDelegation)
				return
			}
		}
		email = cl.Sub
	}
	resp := o.issue(email, cl.Scope, sa.clientID)
	// The assertion grant's reply carries neither scope nor id_token.
	delete(resp, "scope")
	delete(resp, "id_token")
	writeJSON(w, 200, resp)
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
