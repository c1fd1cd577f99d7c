package fakem365

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Grant names, as in the token request's grant_type (device code shortened).
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantDeviceCode        = "device_code"
	// deviceGrantType is the wire value of the device-code grant (RFC 8628).
	deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"
)

// Entra is a fake Entra ID v2 endpoint. Its URL is the authority: tenants
// live below it as {URL}/{tenant}/oauth2/v2.0/… like login.microsoftonline.com.
type Entra struct {
	URL string

	srv *http.Server
	ln  net.Listener

	mu             sync.Mutex
	now            func() time.Time
	accessLifetime time.Duration
	revokeOnRotate bool
	deviceInterval int
	appRoles       []string // the roles claim of app-only tokens
	authorizeError *AuthorizeError
	clients        map[string]string              // client id -> secret ("" = public client)
	certs          map[string][]*x509.Certificate // client id -> registered certificates (entra_cert.go)
	jtis           map[string]time.Time           // client assertions seen, until they expire
	codes          map[string]*codeGrant
	refresh        map[string]*refreshGrant
	access         map[string]*AccessGrant
	devices        map[string]*deviceGrant
	faults         map[string][]Fault
	counts         map[string]int
	issued         []string // every access and refresh token, even revoked ones
	statePath      string   // grants are kept here when set (Options.StateDir)
	cloudResource  string   // SetCloud: a national cloud's Exchange Online resource
}

type codeGrant struct {
	clientID, redirectURI, challenge, scope, upn string
	expires                                      time.Time
	used                                         bool
}

type refreshGrant struct {
	clientID, scope, upn string
	revoked              bool
}

// AccessGrant is what an access token the fake issued stands for.
type AccessGrant struct {
	ClientID string
	UPN      string // "" for app-only tokens
	AppOnly  bool
	Expires  time.Time
	// Scopes are the delegated permissions (the scp claim: "SMTP.Send",
	// "IMAP.AccessAsUser.All", …); Roles the app-only ones (the roles claim).
	Scopes []string `json:",omitempty"`
	Roles  []string `json:",omitempty"`
}

// Allows reports whether the token carries permission perm, delegated or
// app-only.
func (g AccessGrant) Allows(perm string) bool {
	return contains(g.Scopes, perm) || contains(g.Roles, perm)
}

type deviceGrant struct {
	clientID, scope, userCode, upn string
	state                          string // pending, approved, declined, expired, redeemed
	expires                        time.Time
}

// Fault is an error the token endpoint answers with instead of a token.
type Fault struct {
	// Code is an AADSTS code (70008, 65001, …); its error and HTTP status
	// follow Entra ID. Zero with HTTPStatus set gives a bare server error.
	Code int
	// HTTPStatus overrides the status; 500/503 make a transient failure.
	HTTPStatus int
	// Error overrides the OAuth error string (e.g. "authorization_pending").
	Error string
}

// AuthorizeError makes /authorize redirect back with an error instead of a code.
type AuthorizeError struct {
	Error       string // consent_required, access_denied, interaction_required
	Description string // usually "AADSTS65001: …"
}

// aadsts describes each AADSTS code as Entra ID does (shared/M365.md).
var aadsts = map[int]struct {
	err    string
	status int
	text   string
}{
	65001:   {"invalid_grant", 400, "The user or administrator has not consented to use the application. Send an interactive authorization request for this user and resource."},
	90094:   {"invalid_grant", 400, "Admin consent is required for the permissions requested by this application."},
	70008:   {"invalid_grant", 400, "The provided authorization code or refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was inactive for 90.00:00:00."},
	700082:  {"invalid_grant", 400, "The refresh token has expired due to inactivity."},
	50173:   {"invalid_grant", 400, "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password."},
	54005:   {"invalid_grant", 400, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."},
	7000215: {"invalid_client", 401, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."},
	7000222: {"invalid_client", 401, "The provided client secret keys for app are expired."},
	7000218: {"invalid_client", 401, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."},
	50076:   {"interaction_required", 400, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource."},
	50079:   {"interaction_required", 400, "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access the resource."},
	70016:   {"authorization_pending", 400, "OAuth 2.0 device flow error. Authorization is pending. Continue polling."},
	9002313: {"invalid_request", 400, "Invalid request. Request is malformed or invalid."},
}

// NewEntra starts a fake Entra ID on 127.0.0.1 with a random port.
func NewEntra() (*Entra, error) { return newEntraAt("") }

func newEntraAt(addr string) (*Entra, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	e := &Entra{
		URL:            "http://" + ln.Addr().String(),
		ln:             ln,
		now:            time.Now,
		accessLifetime: time.Hour,
		deviceInterval: 1,
		// The fake tenant's admin granted every application permission the
		// relay can use; SetAppRoles narrows it.
		appRoles: []string{"SMTP.SendAsApp", "IMAP.AccessAsApp", "POP.AccessAsApp"},
		clients:  map[string]string{},
		certs:    map[string][]*x509.Certificate{},
		jtis:     map[string]time.Time{},
		codes:    map[string]*codeGrant{},
		refresh:  map[string]*refreshGrant{},
		access:   map[string]*AccessGrant{},
		devices:  map[string]*deviceGrant{},
		faults:   map[string][]Fault{},
		counts:   map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", e.authorize)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.token)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/devicecode", e.deviceCode)
	mux.HandleFunc("GET /{tenant}/v2.0/adminconsent", e.adminConsent)
	// GET /device?code=<user code>&upn=<user> approves a pending device code,
	// standing in for a person signing in (the Go API has ApproveDevice).
	mux.HandleFunc("GET /device", func(w http.ResponseWriter, r *http.Request) {
		code, upn := r.URL.Query().Get("code"), r.URL.Query().Get("upn")
		if code == "" {
			fmt.Fprintln(w, "fake Entra ID: open /device?code=<user code>&upn=<mailbox> to approve a device code")
			return
		}
		if upn == "" {
			upn = "user@contoso.test"
		}
		if err := e.ApproveDevice(code, upn); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, "approved %s as %s\n", code, upn)
	})
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go e.srv.Serve(ln)
	return e, nil
}

// Close stops the server.
func (e *Entra) Close() error { return e.srv.Close() }

// SetAccessTokenLifetime sets expires_in of tokens issued from now on.
func (e *Entra) SetAccessTokenLifetime(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.accessLifetime = d
}

// SetAppRoles sets the application permissions (the roles claim) of
// app-only tokens issued from now on.
func (e *Entra) SetAppRoles(roles ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.appRoles = append([]string(nil), roles...)
}

// SetRevokeOnRotate makes every refresh revoke the refresh token it used, so
// only the newest one works (Entra may do this; a relay must keep the newest).
func (e *Entra) SetRevokeOnRotate(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.revokeOnRotate = on
}

// RegisterClient makes the token endpoint require secret for clientID
// (7000218 when missing, 7000215 when wrong). Unregistered clients are
// treated as public clients and accepted.
func (e *Entra) RegisterClient(clientID, secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clients[clientID] = secret
}

// SetAuthorizeError makes /authorize redirect with this error (nil: approve).
func (e *Entra) SetAuthorizeError(ae *AuthorizeError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.authorizeError = ae
}

// FailNext makes the next requests of grant answer with the faults, in order.
func (e *Entra) FailNext(grant string, faults ...Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults[grant] = append(e.faults[grant], faults...)
}

// RevokeAll revokes every refresh token (a password reset: AADSTS50173 on
// use) and every access token.
func (e *Entra) RevokeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.save()
	for _, g := range e.refresh {
		g.revoked = true
	}
	clear(e.access)
}

// Secrets lists every access token, refresh token, code and device code the
// fake issued, for tests that check no secret reached a log.
func (e *Entra) Secrets() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]string(nil), e.issued...)
	for k := range e.codes {
		out = append(out, k)
	}
	for k := range e.devices {
		out = append(out, k)
	}
	return out
}

// Requests returns how many token requests of grant were made.
func (e *Entra) Requests(grant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[grant]
}

// CheckAccess reports what an access token stands for, if the fake issued it
// and it has not expired.
func (e *Entra) CheckAccess(token string) (AccessGrant, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.access[token]
	if !ok || !e.now().Before(g.Expires) {
		return AccessGrant{}, false
	}
	return *g, true
}

// ApproveDevice approves the pending device code with userCode as upn.
func (e *Entra) ApproveDevice(userCode, upn string) error {
	return e.setDevice(userCode, "approved", upn)
}

// DeclineDevice declines the pending device code.
func (e *Entra) DeclineDevice(userCode string) error {
	return e.setDevice(userCode, "declined", "")
}

// ExpireDevice lets the device code run out.
func (e *Entra) ExpireDevice(userCode string) error {
	return e.setDevice(userCode, "expired", "")
}

func (e *Entra) setDevice(userCode, state, upn string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.devices {
		if d.userCode == userCode && d.state == "pending" {
			d.state, d.upn = state, upn
			return nil
		}
	}
	return fmt.Errorf("fakem365: no pending device code %q", userCode)
}

// PendingUserCodes lists the user codes waiting for approval.
func (e *Entra) PendingUserCodes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, d := range e.devices {
		if d.state == "pending" {
			out = append(out, d.userCode)
		}
	}
	return out
}

func randomToken(prefix string) string {
	b := make([]byte, 18)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func (e *Entra) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || q.Get("client_id") == "" || q.Get("response_type") != "code" {
		http.Error(w, "AADSTS900144: The request body must contain client_id, response_type=code and redirect_uri.", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	if s := q.Get("state"); s != "" {
		back.Set("state", s)
	}
	e.mu.Lock()
	ae := e.authorizeError
	if ae == nil {
		upn := q.Get("login_hint")
		if upn == "" {
			upn = "user@contoso.test"
		}
		code := randomToken("fake-code-")
		e.codes[code] = &codeGrant{
			clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"),
			challenge: q.Get("code_challenge"), scope: q.Get("scope"), upn: upn,
			expires: e.now().Add(10 * time.Minute),
		}
		if q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256" {
			e.mu.Unlock()
			http.Error(w, "AADSTS501491: code_challenge_method must be S256", http.StatusBadRequest)
			return
		}
		back.Set("code", code)
	} else {
		back.Set("error", ae.Error)
		back.Set("error_description", ae.Description)
	}
	e.mu.Unlock()
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func (e *Entra) adminConsent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" {
		http.Error(w, "redirect_uri required", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("admin_consent", "True")
	back.Set("tenant", r.PathValue("tenant"))
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func (e *Entra) deviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("client_id") == "" {
		writeOAuthError(w, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	e.mu.Lock()
	dc := randomToken("fake-device-")
	b := make([]byte, 4)
	rand.Read(b)
	userCode := strings.ToUpper(hex.EncodeToString(b))
	e.devices[dc] = &deviceGrant{
		clientID: r.PostForm.Get("client_id"), scope: r.PostForm.Get("scope"),
		userCode: userCode, state: "pending", expires: e.now().Add(15 * time.Minute),
	}
	interval := e.deviceInterval
	e.mu.Unlock()
	verify := e.URL + "/device"
	writeJSON(w, 200, map[string]any{
		"device_code":      dc,
		"user_code":        userCode,
		"verification_uri": verify,
		"expires_in":       900,
		"interval":         interval,
		"message":          fmt.Sprintf("To sign in, use a web browser to open the page %s and enter the code %s to authenticate.", verify, userCode),
	})
}

func (e *Entra) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, 400, "invalid_request", 900144, "The request body must be application/x-www-form-urlencoded.")
		return
	}
	f := r.PostForm
	grant := f.Get("grant_type")
	if grant == deviceGrantType {
		grant = GrantDeviceCode
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[grant]++

	if q := e.faults[grant]; len(q) > 0 {
		e.faults[grant] = q[1:]
		writeFault(w, q[0])
		return
	}
	clientID := f.Get("client_id")
	if f.Has("client_assertion") || f.Has("client_assertion_type") {
		if af := e.checkAssertion(f, clientID, e.URL+r.URL.Path); af != nil {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", af.code, af.text)
			return
		}
	} else if secret, registered := e.clients[clientID]; registered && secret != "" {
		switch f.Get("client_secret") {
		case "":
			writeFault(w, Fault{Code: 7000218})
			return
		case secret:
		default:
			writeFault(w, Fault{Code: 7000215})
			return
		}
	} else if len(e.certs[clientID]) > 0 {
		// A confidential client with only a certificate.
		if f.Get("client_secret") == "" {
			writeFault(w, Fault{Code: 7000218})
		} else {
			writeFault(w, Fault{Code: 7000215})
		}
		return
	}

	switch grant {
	case GrantAuthorizationCode:
		c, ok := e.codes[f.Get("code")]
		switch {
		case !ok || c.clientID != clientID || e.now().After(c.expires):
			writeOAuthError(w, 400, "invalid_grant", 70000, "The provided value for the 'code' parameter is not valid.")
			return
		case c.used:
			writeFault(w, Fault{Code: 54005})
			return
		case c.redirectURI != f.Get("redirect_uri"):
			writeOAuthError(w, 400, "invalid_grant", 50148, "The redirect URI specified in the request does not match the redirect URI of the authorization request.")
			return
		case c.challenge != "" && s256(f.Get("code_verifier")) != c.challenge:
			writeOAuthError(w, 400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
			return
		}
		c.used = true
		e.issue(w, clientID, c.scope, c.upn, false)
	case GrantRefreshToken:
		g, ok := e.refresh[f.Get("refresh_token")]
		if !ok || g.revoked || g.clientID != clientID {
			writeFault(w, Fault{Code: 50173})
			return
		}
		if e.revokeOnRotate {
			g.revoked = true
		}
		scope := f.Get("scope")
		if scope == "" {
			scope = g.scope
		}
		e.issue(w, clientID, scope, g.upn, false)
	case GrantClientCredentials:
		if !strings.HasSuffix(f.Get("scope"), "/.default") {
			writeOAuthError(w, 400, "invalid_scope", 1002012, "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.")
			return
		}
		e.issue(w, clientID, f.Get("scope"), "", true)
	case GrantDeviceCode:
		d, ok := e.devices[f.Get("device_code")]
		if !ok || d.clientID != clientID {
			writeOAuthError(w, 400, "bad_verification_code", 70019, "Verification code not recognized.")
			return
		}
		if d.state == "pending" && e.now().After(d.expires) {
			d.state = "expired"
		}
		switch d.state {
		case "pending":
			writeFault(w, Fault{Code: 70016})
		case "declined":
			writeOAuthError(w, 400, "authorization_declined", 70000, "The user has declined to authorize the request.")
		case "expired":
			writeOAuthError(w, 400, "expired_token", 70020, "The provided device code has expired. Use a new device code.")
		case "redeemed":
			writeOAuthError(w, 400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed.")
		case "approved":
			d.state = "redeemed"
			e.issue(w, clientID, d.scope, d.upn, false)
		}
	default:
		writeOAuthError(w, 400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+grant+"'.")
	}
}

// issue writes a token response; caller holds e.mu.
func (e *Entra) issue(w http.ResponseWriter, clientID, scope, upn string, appOnly bool) {
	if res := e.foreignResource(scope); res != "" {
		writeOAuthError(w, 400, "invalid_resource", 500011, "The resource principal named "+res+" was not found in the tenant. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.")
		return
	}
	g := &AccessGrant{ClientID: clientID, UPN: upn, AppOnly: appOnly, Expires: e.now().Add(e.accessLifetime)}
	if appOnly {
		g.Roles = append([]string(nil), e.appRoles...)
	} else {
		for _, sc := range strings.Fields(scope) {
			if p := e.permission(sc); p != "" {
				g.Scopes = append(g.Scopes, p)
			}
		}
	}
	at := e.accessToken(g)
	e.issued = append(e.issued, at)
	e.access[at] = g
	defer e.save()
	resp := map[string]any{
		"token_type":     "Bearer",
		"scope":          scope,
		"expires_in":     int(e.accessLifetime / time.Second),
		"ext_expires_in": int(e.accessLifetime / time.Second),
		"access_token":   at,
	}
	scopes := strings.Fields(scope)
	if !appOnly && contains(scopes, "offline_access") {
		rt := randomToken("fake-rt-")
		e.refresh[rt] = &refreshGrant{clientID: clientID, scope: scope, upn: upn}
		e.issued = append(e.issued, rt)
		resp["refresh_token"] = rt
	}
	if !appOnly && contains(scopes, "openid") {
		resp["id_token"] = unsignedJWT(map[string]any{
			"aud": clientID, "iss": e.URL + "/v2.0", "preferred_username": upn,
			"upn": upn, "iat": e.now().Unix(), "exp": e.now().Add(time.Hour).Unix(),
		})
	}
	writeJSON(w, 200, resp)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// accessToken is shaped like Microsoft's access tokens for Exchange
// Online: a JWT naming the permissions (scp delegated, roles app-only) and
// the user; its "signature" is random, which also makes each one unique.
func (e *Entra) accessToken(g *AccessGrant) string {
	claims := map[string]any{"aud": "https://outlook.office.com", "iss": e.URL + "/", "appid": g.ClientID,
		"iat": e.now().Unix(), "exp": g.Expires.Unix()}
	if g.AppOnly {
		claims["roles"] = g.Roles
	} else {
		claims["scp"], claims["upn"] = strings.Join(g.Scopes, " "), g.UPN
	}
	return strings.TrimSuffix(unsignedJWT(claims), ".") + "." + randomToken("")
}

func unsignedJWT(claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func writeFault(w http.ResponseWriter, f Fault) {
	if f.Code == 0 && f.Error == "" {
		status := f.HTTPStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, "fakem365: injected server error", status)
		return
	}
	info, ok := aadsts[f.Code]
	if !ok {
		info.err, info.status, info.text = "invalid_request", 400, "Injected error."
	}
	if f.Error != "" {
		info.err = f.Error
	}
	if f.HTTPStatus != 0 {
		info.status = f.HTTPStatus
	}
	writeOAuthError(w, info.status, info.err, f.Code, info.text)
}

func writeOAuthError(w http.ResponseWriter, status int, errCode string, code int, text string) {
	writeJSON(w, status, map[string]any{
		"error":             errCode,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: 00000000-0000-0000-0000-000000000000 Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: %s", code, text, time.Now().UTC().Format("2006-01-02 15:04:05Z")),
		"error_codes":       []int{code},
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":          "00000000-0000-0000-0000-000000000000",
		"correlation_id":    "00000000-0000-0000-0000-000000000000",
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", code),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
