package fakegoogle

import (
	"net"
	"net/http"
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
	faults      []fault
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

// fault is a reply the token endpoint gives instead of handling a request.
type fault struct {
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
	o.faults = append(o.faults, fault{Status: status, Body: body})
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
