package tokens

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"
)

// Providers and the Google flow (configs names them the same).
const (
	ProviderMicrosoft  = "microsoft"
	ProviderGoogle     = "google"
	FlowServiceAccount = "service_account"
)

// GoogleScope is the one scope Gmail's SMTP, IMAP and POP3 accept for
// XOAUTH2 (https://developers.google.com/gmail/imap/xoauth2-protocol).
const GoogleScope = "https://mail.google.com/"

// Google's endpoints; an account's Authority other than
// https://accounts.google.com (a test server) replaces both.
const (
	googleAuthority = "https://accounts.google.com"
	googleAuthURL   = "https://accounts.google.com/o/oauth2/v2/auth"
	googleTokenURL  = "https://oauth2.googleapis.com/token"
)

func (a Account) google() bool { return a.Provider == ProviderGoogle }

// ProviderName is how the account's provider is named to people.
func (a Account) ProviderName() string {
	if a.google() {
		return "Google"
	}
	return "Microsoft"
}

// tokenService names where the account's tokens come from.
func (a Account) tokenService() string {
	if a.google() {
		return "Google's token service"
	}
	return "Microsoft Entra ID"
}

// scopes are what a delegated sign-in asks for: for Microsoft one Exchange
// Online scope per protocol under the cloud's resource, a refresh token
// (offline_access) and openid (who signed in); for Google the Gmail scope
// (all protocols) and openid email (who signed in; the refresh token comes
// from access_type=offline).
func (a Account) scopes() []string {
	if a.google() {
		return []string{GoogleScope, "openid", "email"}
	}
	s := []string{"openid", "offline_access"}
	protocols := a.Protocols
	if len(protocols) == 0 {
		protocols = []string{"smtp"}
	}
	for _, p := range protocols {
		if sc := a.protocolScope(p); sc != "" {
			s = append(s, sc)
		}
	}
	return s
}

// ScopesFor is what a token of a asks for: a delegated sign-in's scopes,
// or an app-only token's.
func ScopesFor(a Account) []string {
	if a.delegated() {
		return a.scopes()
	}
	return a.appScopes()
}

// protocolScope is the scope that lets the account's token sign in with
// protocol ("" for none).
func (a Account) protocolScope(p string) string {
	if a.google() {
		return GoogleScope
	}
	res := a.Resource
	if res == "" {
		res = "https://outlook.office.com"
	}
	switch p {
	case "smtp":
		return res + "/SMTP.Send"
	case "imap":
		return res + "/IMAP.AccessAsUser.All"
	case "pop3":
		return res + "/POP.AccessAsUser.All"
	}
	return ""
}

// appScopes are what an app-only token asks for.
func (a Account) appScopes() []string {
	if a.google() {
		return []string{GoogleScope}
	}
	res := a.AppResource
	if res == "" {
		res = "https://outlook.office365.com"
	}
	return []string{res + "/.default"}
}

// authCodeOptions are the authorization request's provider-specific
// parameters: Google gives a refresh token only with access_type=offline
// (and again on a later sign-in only with prompt=consent); Microsoft lets
// the admin pick the account.
func (a Account) authCodeOptions() []oauth2.AuthCodeOption {
	if a.google() {
		return []oauth2.AuthCodeOption{oauth2.AccessTypeOffline, oauth2.SetAuthURLParam("prompt", "consent")}
	}
	return []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "select_account")}
}

// googleEndpoint is Google's, or a test server's at a.Authority.
func (a Account) googleEndpoint() oauth2.Endpoint {
	auth, tok := googleAuthURL, googleTokenURL
	if base := strings.TrimRight(a.Authority, "/"); base != "" && base != googleAuthority {
		auth, tok = base+"/o/oauth2/v2/auth", base+"/token"
	}
	return oauth2.Endpoint{AuthURL: auth, TokenURL: tok, AuthStyle: oauth2.AuthStyleInParams}
}

// serviceAccountKey is the part of a Google service account's JSON key
// the JWT bearer grant needs.
type serviceAccountKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
}

const downloadKey = "download a new JSON key: Google Cloud console > IAM & Admin > Service accounts > the account > Keys > Add key > JSON, and point service_account_file at it"

// ReadServiceAccount reads and checks a Google service account's JSON key
// file as a token request would; every problem is a *CertificateError
// naming service_account_file. Every token request reads the file again,
// so a rotated key is picked up without a restart.
func ReadServiceAccount(path string) (serviceAccountKey, error) {
	const key = "service_account_file"
	var k serviceAccountKey
	bad := func(problem, fix string) error {
		return &CertificateError{File: path, Key: key, Problem: problem, Fix: fix}
	}
	b, err := readFile(path, key)
	if err != nil {
		return k, err
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return k, bad("is not a JSON key file ("+err.Error()+")", downloadKey)
	}
	var missing []string
	for _, f := range []struct{ name, val string }{{"type", k.Type}, {"client_email", k.ClientEmail}, {"private_key", k.PrivateKey}} {
		if f.val == "" {
			missing = append(missing, f.name)
		}
	}
	switch {
	case len(missing) > 0:
		return k, bad("lacks "+strings.Join(missing, ", ")+" — it is not a service account key", downloadKey)
	case k.Type != "service_account":
		return k, bad(fmt.Sprintf("is a key of type %q, not a service account's (an OAuth client's file goes into client_id and client_secret)", k.Type), downloadKey)
	}
	// A key pasted with its line breaks as the two characters \n.
	k.PrivateKey = strings.ReplaceAll(k.PrivateKey, `\n`, "\n")
	blk, _ := pem.Decode([]byte(k.PrivateKey))
	if blk == nil {
		return k, bad("has a private_key that is not a PEM key (-----BEGIN PRIVATE KEY-----)", downloadKey)
	}
	var pk any
	switch blk.Type {
	case "PRIVATE KEY":
		pk, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		pk, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return k, bad("has a private_key of type "+blk.Type+" (encrypted, or not a private key)", downloadKey)
	}
	if err != nil {
		return k, bad("has a private_key that cannot be parsed: "+err.Error(), downloadKey)
	}
	rk, ok := pk.(*rsa.PrivateKey)
	if !ok {
		return k, bad(fmt.Sprintf("has a %T private_key; Google signs service accounts' requests with RSA", pk), downloadKey)
	}
	if rk.N.BitLen() < 2048 {
		return k, bad(fmt.Sprintf("has a %d-bit RSA key; Google's are 2048 bits", rk.N.BitLen()), downloadKey)
	}
	return k, nil
}

// serviceAccountToken signs in as a.Mailbox with a's service account:
// the JWT bearer grant with sub = the mailbox (domain-wide delegation).
// x/oauth2/jwt does the grant; its sibling package x/oauth2/google would
// read the key file too but pulls in the GCE metadata client. The file's
// token_uri is not used: the assertion goes to Google's token endpoint (or
// the account's authority), wherever an edited file would send it.
func (a Account) serviceAccountToken(ctx context.Context) (*oauth2.Token, error) {
	k, err := ReadServiceAccount(a.ServiceAccountFile)
	if err != nil {
		return nil, err
	}
	tokenURL := a.googleEndpoint().TokenURL
	cfg := &jwt.Config{Email: k.ClientEmail, PrivateKey: []byte(k.PrivateKey), PrivateKeyID: k.PrivateKeyID,
		Subject: a.Mailbox, Scopes: a.appScopes(), TokenURL: tokenURL}
	return cfg.TokenSource(ctx).Token()
}

// classifyGoogle explains an error of Google's token endpoint
// ({"error": ..., "error_description": ...}).
func classifyGoogle(re *oauth2.RetrieveError, a Account) (State, Explanation) {
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" {
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &body) == nil {
			code, desc = body.Error, body.Description
		}
	}
	ex := Explanation{Code: strings.TrimSpace(code + " " + desc)}
	switch {
	case code == "invalid_grant" && a.Flow == FlowServiceAccount && strings.Contains(desc, "Invalid email or User ID"):
		ex.Title = "Google does not know the mailbox " + a.Mailbox
		ex.Action = "set accounts[].mailbox to a user of your Google Workspace domain"
		return Misconfigured, ex
	case code == "invalid_grant" && a.Flow == FlowServiceAccount:
		ex.Title = "Google refused the service account's signed request"
		ex.Detail = "The key in service_account_file was deleted or disabled, or this machine's clock is off."
		ex.Action = "create a new JSON key for the service account (IAM > Service accounts > Keys), set accounts[].service_account_file, check the clock (timedatectl)"
		return Misconfigured, ex
	case code == "unauthorized_client" && a.Flow == FlowServiceAccount:
		ex.Title = "the service account may not sign in as " + a.Mailbox
		ex.Detail = "Domain-wide delegation is not granted to the service account's client ID for the scope " + GoogleScope + "."
		ex.Action = "in the Google Admin console: Security > Access and data control > API controls > Manage Domain Wide Delegation > Add new: the service account's client ID with the scope " + GoogleScope
		return Misconfigured, ex
	case code == "invalid_grant":
		ex.Title = "the Google sign-in expired or was revoked"
		ex.Detail = "Google revokes a refresh token when the password changes, when access is removed at myaccount.google.com/permissions, after six months unused, or after 7 days while the OAuth consent screen is in Testing."
		ex.Action = "press Connect and sign in as " + a.Mailbox + " again (publish the OAuth consent screen so sign-ins stop expiring after 7 days)"
		return NeedsReconnect, ex
	case code == "invalid_client" || code == "unauthorized_client":
		ex.Title = "Google does not accept the OAuth client"
		ex.Detail = "The client ID or client secret is wrong, or the client was deleted."
		ex.Action = "check accounts[].client_id and client_secret against Google Cloud console > APIs & Services > Credentials"
		return Misconfigured, ex
	case code == "invalid_scope":
		ex.Title = "Google refused the Gmail scope"
		ex.Action = "add the scope " + GoogleScope + " to the OAuth consent screen (Data access), then Connect again"
		return Misconfigured, ex
	case code == "access_denied":
		ex.Title = "the sign-in was declined"
		ex.Action = "press Connect and allow the access"
		return NeedsReconnect, ex
	}
	ex.Title = "Google refused the token request"
	ex.Action = "check the account's settings against Google Cloud console, then press Try again"
	return Misconfigured, ex
}

// googleGranted lists what a Google grant covers, for missingProtocols:
// the Gmail scope covers every protocol.
func googleGranted(granted []string) bool {
	return slices.Contains(granted, GoogleScope)
}
