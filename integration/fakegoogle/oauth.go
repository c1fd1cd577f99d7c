package fakegoogle

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Grant types, as in the token request's grant_type.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// GrantDeviceCode counts requests to the device-code endpoint.
	GrantDeviceCode = "device_code"
)

// Paths of the fake's endpoints below OAuth.URL.
const (
	AuthorizePath  = "/o/oauth2/v2/auth" // accounts.google.com
	TokenPath      = "/token"            // oauth2.googleapis.com
	DeviceCodePath = "/device/code"      // oauth2.googleapis.com
)

// accessLifetime is expires_in of Google's access tokens: 3599 seconds.
const accessLifetime = 3599 * time.Second

// OAuth is a fake Google authorization server (accounts.google.com and
// oauth2.googleapis.com on one listener).
type OAuth struct {
	URL string

	srv *http.Server

	mu          sync.Mutex
	now         func() time.Time
	lifetime    time.Duration
	clients     map[string]*client // client_id
	users       map[string]bool    // lower-cased mailboxes of the domain
	signedIn    string
	declineNext bool
	accounts    map[string]*serviceAccount // client_email
	delegation  map[string][]string        // service account client_id -> scopes
	codes       map[string]*codeGrant
	refresh     map[string]*grant
	access      map[string]*accessGrant
	faults      []Fault
	counts      map[string]int
}

type client struct {
	secret    string
	redirects []string
}

type codeGrant struct {
	clientID, redirectURI, challenge, method, scope, email string
	offline                                                bool
	expires                                                time.Time
	used                                                   bool
}

type grant struct {
	clientID, scope, email string
	revoked                bool
}

type accessGrant struct {
	email   string
	scopes  []string
	expires time.Time
}

// Fault is a reply the token endpoint gives instead of handling a request.
type Fault struct {
	Status int
	Body   string // sent as application/json
}

// NewOAuth starts a fake Google authorization server on 127.0.0.1 with a
// random port.
func NewOAuth() (*OAuth, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &OAuth{
		URL:        "http://" + ln.Addr().String(),
		now:        time.Now,
		lifetime:   accessLifetime,
		clients:    map[string]*client{},
		users:      map[string]bool{},
		accounts:   map[string]*serviceAccount{},
		delegation: map[string][]string{},
		codes:      map[string]*codeGrant{},
		refresh:    map[string]*grant{},
		access:     map[string]*accessGrant{},
		counts:     map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AuthorizePath, o.authorize)
	mux.HandleFunc("POST "+TokenPath, o.token)
	mux.HandleFunc("POST "+DeviceCodePath, o.deviceCode)
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go o.srv.Serve(ln)
	return o, nil
}

// Close stops the server.
func (o *OAuth) Close() error { return o.srv.Close() }

// AuthorizeURL is the fake https://accounts.google.com/o/oauth2/v2/auth.
func (o *OAuth) AuthorizeURL() string { return o.URL + AuthorizePath }

// TokenURL is the fake https://oauth2.googleapis.com/token.
func (o *OAuth) TokenURL() string { return o.URL + TokenPath }

// DeviceCodeURL is the fake https://oauth2.googleapis.com/device/code.
func (o *OAuth) DeviceCodeURL() string { return o.URL + DeviceCodePath }

// RegisterClient registers an OAuth client (a "Desktop app" or "Web
// application" client of the Cloud console) with its secret and redirect
// URIs. A redirect URI of http://127.0.0.1 or http://localhost without a
// port allows any port on that host, as Google does for desktop clients.
func (o *OAuth) RegisterClient(clientID, secret string, redirectURIs ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clients[clientID] = &client{secret: secret, redirects: append([]string(nil), redirectURIs...)}
}

// AddUser makes mailbox a user of the Workspace domain (one that may sign
// in and that a service account may impersonate).
func (o *OAuth) AddUser(mailbox string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.users[strings.ToLower(mailbox)] = true
}

// SignInAs makes mailbox the user who signs in and consents at the
// authorize endpoint from now on (and adds it as a user).
func (o *OAuth) SignInAs(mailbox string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.users[strings.ToLower(mailbox)] = true
	o.signedIn = mailbox
}

// DeclineNextAuthorize makes the next authorize request end as if the user
// had clicked Cancel: a redirect with error=access_denied.
func (o *OAuth) DeclineNextAuthorize() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.declineNext = true
}

// SetAccessTokenLifetime sets the lifetime (expires_in) of access tokens
// issued from now on; Google's is 3599 seconds.
func (o *OAuth) SetAccessTokenLifetime(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lifetime = d
}

// FailNext makes the next token requests, of any grant, answer with
// status and body (JSON) in order; they are still counted.
func (o *OAuth) FailNext(status int, body string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.faults = append(o.faults, Fault{Status: status, Body: body})
}

// RevokeAll revokes every refresh and access token, as a password change
// or an administrator's "reset sign-in cookies" does.
func (o *OAuth) RevokeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, g := range o.refresh {
		g.revoked = true
	}
	clear(o.access)
}

// Requests returns how many token requests of grant were made
// (GrantDeviceCode: requests to the device-code endpoint).
func (o *OAuth) Requests(grant string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[grant]
}

// CheckAccess reports whose an access token is and its scopes, if the fake
// issued it, it was not revoked and it has not expired.
func (o *OAuth) CheckAccess(token string) (email string, scopes []string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	g, found := o.access[token]
	if !found || !o.now().Before(g.expires) {
		return "", nil, false
	}
	return g.email, append([]string(nil), g.scopes...), true
}

// redirectAllowed reports whether uri is one of c's redirect URIs.
func (c *client) redirectAllowed(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil {
		return false
	}
	for _, r := range c.redirects {
		if r == uri {
			return true
		}
		// Loopback redirects of desktop clients may use any port.
		if (r == "http://127.0.0.1" || r == "http://localhost") && u.Scheme == "http" &&
			"http://"+u.Hostname() == r && u.Port() != "" {
			return true
		}
	}
	return false
}

// errorPage is what accounts.google.com shows instead of redirecting: the
// request cannot be trusted to go back to redirect_uri.
func errorPage(w http.ResponseWriter, status int, code, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!DOCTYPE html><title>Error %d (%s)</title><h1>Access blocked: Authorization Error</h1><p>Error %d: %s</p><p>%s</p>\n",
		status, html.EscapeString(code), status, html.EscapeString(code), html.EscapeString(text))
}

func (o *OAuth) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	clientID, redirectURI := q.Get("client_id"), q.Get("redirect_uri")
	if clientID == "" {
		errorPage(w, http.StatusBadRequest, "invalid_request", "Missing required parameter: client_id")
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c, ok := o.clients[clientID]
	switch {
	case !ok:
		errorPage(w, http.StatusUnauthorized, "invalid_client", "The OAuth client was not found.")
		return
	case redirectURI == "":
		errorPage(w, http.StatusBadRequest, "invalid_request", "Missing required parameter: redirect_uri")
		return
	case !c.redirectAllowed(redirectURI):
		errorPage(w, http.StatusBadRequest, "redirect_uri_mismatch",
			"The redirect URI in the request, "+redirectURI+", does not match the ones authorized for the OAuth client.")
		return
	case q.Get("response_type") == "":
		errorPage(w, http.StatusBadRequest, "invalid_request", "Required parameter is missing: response_type")
		return
	case q.Get("response_type") != "code":
		errorPage(w, http.StatusBadRequest, "unsupported_response_type", "Invalid response_type: "+q.Get("response_type"))
		return
	case q.Get("scope") == "":
		errorPage(w, http.StatusBadRequest, "invalid_request", "Missing required parameter: scope")
		return
	}
	method := q.Get("code_challenge_method")
	if q.Get("code_challenge") != "" && method == "" {
		method = "plain" // RFC 7636 section 4.3
	}
	if method != "" && method != "S256" && method != "plain" {
		errorPage(w, http.StatusBadRequest, "invalid_request", "Invalid code_challenge_method value.")
		return
	}
	back, _ := url.Parse(redirectURI)
	v := back.Query()
	if s := q.Get("state"); s != "" {
		v.Set("state", s)
	}
	if o.declineNext || o.signedIn == "" {
		o.declineNext = false
		v.Set("error", "access_denied")
	} else {
		code := "4/0" + randomString(32)
		o.codes[code] = &codeGrant{
			clientID: clientID, redirectURI: redirectURI, challenge: q.Get("code_challenge"), method: method,
			scope: q.Get("scope"), email: o.signedIn, offline: q.Get("access_type") == "offline",
			expires: o.now().Add(10 * time.Minute),
		}
		v.Set("code", code)
		v.Set("scope", q.Get("scope"))
	}
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// userID is the stable numeric id Google gives an account ("sub").
func userID(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	return fmt.Sprintf("1%020d", binary.BigEndian.Uint64(sum[:8]))
}

// userCode is a device flow user code like Google's "GQVQ-JKEC".
func userCode() string {
	const letters = "BCDFGHJKLMNPQRSTVWXZ"
	b := make([]byte, 9)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	b[4] = '-'
	return string(b)
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func (o *OAuth) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, 400, "invalid_request", "Invalid request body.")
		return
	}
	f := r.PostForm
	gt := f.Get("grant_type")
	o.mu.Lock()
	defer o.mu.Unlock()
	o.counts[gt]++
	if len(o.faults) > 0 {
		fault := o.faults[0]
		o.faults = o.faults[1:]
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(fault.Status)
		fmt.Fprint(w, fault.Body)
		return
	}
	switch gt {
	case GrantAuthorizationCode:
		o.redeemCode(w, r)
	case GrantRefreshToken:
		o.refreshGrant(w, r)
	case GrantJWTBearer:
		o.jwtBearer(w, f.Get("assertion"))
	case "":
		writeError(w, 400, "unsupported_grant_type", "Invalid grant_type: ")
	default:
		writeError(w, 400, "unsupported_grant_type", "Invalid grant_type: "+gt)
	}
}

// clientAuth checks client_id and client_secret (form or HTTP Basic, both
// of which Google takes). Google wants the secret even from desktop
// clients, whose secret is not secret. Caller holds o.mu.
func (o *OAuth) clientAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	c, ok := o.clients[id]
	switch {
	case id == "":
		writeError(w, 400, "invalid_request", "Could not determine client ID from request.")
	case !ok:
		writeError(w, 401, "invalid_client", "The OAuth client was not found.")
	case secret == "":
		writeError(w, 400, "invalid_request", "client_secret is missing.")
	case secret != c.secret:
		writeError(w, 401, "invalid_client", "Unauthorized")
	default:
		return id, true
	}
	return "", false
}

func (o *OAuth) redeemCode(w http.ResponseWriter, r *http.Request) {
	clientID, ok := o.clientAuth(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	c, found := o.codes[f.Get("code")]
	switch {
	case !found || c.used || c.clientID != clientID || o.now().After(c.expires):
		writeError(w, 400, "invalid_grant", "Bad Request")
		return
	case c.redirectURI != f.Get("redirect_uri"):
		writeError(w, 400, "redirect_uri_mismatch", "Bad Request")
		return
	case c.challenge == "" && f.Get("code_verifier") != "":
		writeError(w, 400, "invalid_grant", "code_verifier or verifier is not needed.")
		return
	case c.challenge != "" && f.Get("code_verifier") == "":
		writeError(w, 400, "invalid_grant", "Missing code verifier.")
		return
	case c.challenge != "" && !verifierMatches(c.method, c.challenge, f.Get("code_verifier")):
		writeError(w, 400, "invalid_grant", "Invalid code verifier.")
		return
	}
	c.used = true
	resp := o.issue(c.email, c.scope, clientID)
	if c.offline {
		rt := "1//0" + randomString(40)
		o.refresh[rt] = &grant{clientID: clientID, scope: c.scope, email: c.email}
		resp["refresh_token"] = rt
	}
	writeJSON(w, 200, resp)
}

func verifierMatches(method, challenge, verifier string) bool {
	if method == "plain" {
		return verifier == challenge
	}
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:]) == challenge
}

func (o *OAuth) refreshGrant(w http.ResponseWriter, r *http.Request) {
	clientID, ok := o.clientAuth(w, r)
	if !ok {
		return
	}
	g, found := o.refresh[r.PostForm.Get("refresh_token")]
	if !found || g.revoked || g.clientID != clientID {
		writeError(w, 400, "invalid_grant", "Token has been expired or revoked.")
		return
	}
	// Google keeps the refresh token: the reply has none.
	writeJSON(w, 200, o.issue(g.email, g.scope, clientID))
}

// issue makes an access token for email with scope and returns the token
// response without a refresh token. Caller holds o.mu.
func (o *OAuth) issue(email, scope, clientID string) map[string]any {
	at := "ya29.a0" + randomString(60)
	scopes := strings.Fields(scope)
	o.access[at] = &accessGrant{email: email, scopes: scopes, expires: o.now().Add(o.lifetime)}
	resp := map[string]any{
		"access_token": at,
		"expires_in":   int(o.lifetime / time.Second),
		"scope":        scope,
		"token_type":   "Bearer",
	}
	if contains(scopes, "openid") || contains(scopes, "email") || contains(scopes, "https://www.googleapis.com/auth/userinfo.email") {
		resp["id_token"] = o.idToken(email, clientID)
	}
	return resp
}

// idToken is an unsigned JWT with Google's claims; a relay reads the email
// from it and must not trust it for more.
func (o *OAuth) idToken(email, clientID string) string {
	now := o.now()
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	c, _ := json.Marshal(map[string]any{
		"iss": "https://accounts.google.com", "azp": clientID, "aud": clientID,
		"sub": userID(email), "email": email, "email_verified": true,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

// deviceScopes are the scopes Google's device flow grants; Gmail's is not
// among them.
var deviceScopes = []string{
	"openid", "email", "profile",
	"https://www.googleapis.com/auth/userinfo.email",
	"https://www.googleapis.com/auth/userinfo.profile",
	"https://www.googleapis.com/auth/drive.file",
	"https://www.googleapis.com/auth/youtube",
	"https://www.googleapis.com/auth/youtube.readonly",
}

func (o *OAuth) deviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, 400, "invalid_request", "Invalid request body.")
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.counts[GrantDeviceCode]++
	if _, ok := o.clients[r.PostForm.Get("client_id")]; !ok {
		writeError(w, 401, "invalid_client", "The OAuth client was not found.")
		return
	}
	for _, s := range strings.Fields(r.PostForm.Get("scope")) {
		if !contains(deviceScopes, s) {
			// Google names the first scope it refuses.
			writeError(w, 400, "invalid_scope", "Invalid device flow scope: "+s)
			return
		}
	}
	// The fake never completes a device authorization: a relay has no use
	// for one, since Gmail's scope cannot be had this way.
	writeJSON(w, 200, map[string]any{
		"device_code":      randomString(40),
		"user_code":        userCode(),
		"verification_url": "https://www.google.com/device",
		"expires_in":       1800,
		"interval":         5,
	})
}

func writeError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
