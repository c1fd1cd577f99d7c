// Package admin is oauthrelay's admin HTTP server: the status page with
// Connect buttons, the JSON API the CLI uses, /metrics, /healthz and /readyz.
//
// Every page and API call needs the admin token: the API as
// "Authorization: Bearer <token>", pages through a login form that sets an
// HttpOnly, SameSite=Strict session cookie. State-changing calls are POST or
// DELETE only; forms carry a per-session CSRF token. Wrong tokens get 401;
// after five from one address it is locked out for a doubling period (1 s
// up to 15 min) in which every attempt, right or wrong, gets 429. Request
// bodies are capped at MaxRequestBody. /healthz and /readyz need no token and reveal
// nothing secret. The OAuth callback needs no session (Microsoft's redirect
// is cross-site, so a SameSite=Strict cookie is not sent): its single-use
// state protects it.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/lockout"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// Queue is what the admin server does with the queue (*queue.Queue).
type Queue interface {
	List(queue.Filter) []queue.Message
	Get(id string) (queue.Message, error)
	RetryNow(id string) error
	Delete(id string) error
	Flush() queue.FlushResult
	Requeue(id string) (string, error)
	Stats() queue.Stats
	CheckWritable() error
}

// Accounts is what the admin server needs of the token manager.
type Accounts interface {
	States() []tokens.AccountState
	ConnectHandler() http.Handler
	// Retry tries an account that needs attention again and, if it works,
	// resumes its mail (tokens.Manager.Retry).
	Retry(ctx context.Context, name string) (tokens.AccountState, error)
	// StartDeviceSignIn and DeviceSignInStatus run a device-code sign-in
	// in the relay (tokens.Manager).
	StartDeviceSignIn(name string) (tokens.DeviceSignIn, error)
	// Token is a current access token, for GET /api/accounts/{name}/token:
	// tools that speak XOAUTH2 themselves (fetchmail, mbsync) ask for it.
	Token(ctx context.Context, name string) (tokens.Token, error)
	DeviceSignInStatus(name string) (tokens.DeviceSignIn, bool)
}

// Options configure the admin server.
type Options struct {
	Token     string // the admin token; must not be empty
	PublicURL string // for links and the Secure cookie flag
	Version   string
	Queue     Queue
	Accounts  Accounts
	Metrics   http.Handler
	// ListenerUp reports whether the SMTP listener accepts connections.
	ListenerUp func() error
	// Explain says what an upstream reply means (relay.ExplainReply).
	Explain func(r queue.Reply, account, sender string) string
	// Check runs an account's pre-flight check (relay.Upstream.Check).
	Check func(ctx context.Context, account string) CheckResult
	Log   *slog.Logger
	// InboundSessions, when set, returns the IMAP/POP3 sessions open now:
	// account → protocol → count (inbound.Server.Sessions).
	InboundSessions func() map[string]map[string]int
	// SessionLifetime defaults to 12 h.
	SessionLifetime time.Duration
}

// Server is the admin HTTP handler.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	mu       sync.Mutex
	sessions map[string]session
	lock     *lockout.Lockout[string] // the admin token's guessing limit
}

type session struct {
	csrf    string
	expires time.Time
}

const cookieName = "oauthrelay_session"

// New builds the admin server. It refuses to run without a token.
func New(opts Options) (*Server, error) {
	if len(opts.Token) < 16 {
		return nil, errors.New("admin: the admin token must be at least 16 characters (admin.token)")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.SessionLifetime <= 0 {
		opts.SessionLifetime = 12 * time.Hour
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), sessions: map[string]session{}, lock: lockout.New[string](5, lockout.DefaultBase, lockout.DefaultMax)}
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	m.HandleFunc("GET /readyz", s.readyz)

	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.Handle("POST /logout", s.page(s.logout))
	m.Handle("GET /{$}", s.page(s.statusPage))
	m.Handle("POST /ui/queue/{id}/retry", s.page(s.uiAction))
	m.Handle("POST /ui/queue/{id}/delete", s.page(s.uiAction))
	m.Handle("POST /ui/failed/{id}/requeue", s.page(s.uiAction))
	m.Handle("POST /ui/queue/flush", s.page(s.uiAction))
	m.Handle("POST /ui/accounts/{name}/retry", s.page(s.uiAccountRetry))
	m.Handle("POST /ui/accounts/{name}/test", s.page(s.uiAccountTest))
	m.Handle("POST /ui/accounts/{name}/device", s.page(s.uiDeviceStart))
	m.Handle("GET /ui/accounts/{name}/device", s.page(s.uiDeviceStatus))
	connect := opts.Accounts.ConnectHandler()
	m.Handle("GET /connect/{account}", s.page(func(w http.ResponseWriter, r *http.Request) {
		// A device_code account's Connect link (in the log, the webhook,
		// `connect`) shows the code on the page: its app may have no
		// redirect URI for the authorization-code flow.
		for _, a := range s.opts.Accounts.States() {
			if a.Account == r.PathValue("account") && a.Flow == tokens.FlowDeviceCode {
				s.uiDeviceStart(w, r.WithContext(r.Context()))
				return
			}
		}
		connect.ServeHTTP(w, r)
	}))
	m.Handle("GET /oauth/callback", connect) // guarded by its single-use state

	m.Handle("GET /api/status", s.api(s.apiStatus))
	m.Handle("GET /api/accounts", s.api(s.apiAccounts))
	m.Handle("GET /api/queue", s.api(s.apiList))
	m.Handle("GET /api/queue/{id}", s.api(s.apiGet))
	m.Handle("POST /api/queue/{id}/retry", s.api(s.apiRetry))
	m.Handle("DELETE /api/queue/{id}", s.api(s.apiDelete))
	m.Handle("POST /api/queue/flush", s.api(s.apiFlush))
	m.Handle("POST /api/failed/{id}/requeue", s.api(s.apiRequeue))
	m.Handle("POST /api/accounts/{name}/retry", s.api(s.apiAccountRetry))
	m.Handle("POST /api/accounts/{name}/test", s.api(s.apiAccountTest))
	m.Handle("POST /api/accounts/{name}/device", s.api(s.apiDeviceStart))
	m.Handle("GET /api/accounts/{name}/token", s.api(s.apiToken))
	m.Handle("GET /api/accounts/{name}/device", s.api(s.apiDeviceStatus))
	if opts.Metrics != nil {
		m.Handle("GET /metrics", s.api(opts.Metrics.ServeHTTP))
	}
	return s, nil
}

// MaxRequestBody caps every request body: a login form or an API call
// needs a few KiB, and an unauthenticated client must not make the server
// hold megabytes.
const MaxRequestBody = 16 << 10

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxRequestBody {
		http.Error(w, fmt.Sprintf("request body too large (at most %d bytes)", MaxRequestBody), http.StatusRequestEntityTooLarge)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
	if u := s.canonical(r); u != "" {
		http.Redirect(w, r, u, http.StatusFound)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

// canonical returns the public URL's form of a page request that came by
// another loopback name (127.0.0.1 for localhost, or back): the session
// cookie belongs to one origin, so every link and login stays on the one
// admin.public_url names. Only pages are redirected, never the API.
func (s *Server) canonical(r *http.Request) string {
	pu, err := url.Parse(s.opts.PublicURL)
	if err != nil || pu.Host == "" || r.Host == pu.Host || r.Method != http.MethodGet {
		return ""
	}
	if p := r.URL.Path; strings.HasPrefix(p, "/api/") || p == "/metrics" || p == "/healthz" || p == "/readyz" || p == "/oauth/callback" {
		return ""
	}
	loopback := func(h string) bool {
		h = strings.Trim(h, "[]")
		return h == "localhost" || h == "127.0.0.1" || h == "::1"
	}
	rh, rp, err1 := net.SplitHostPort(r.Host)
	ph, pp, err2 := net.SplitHostPort(pu.Host)
	if err1 != nil || err2 != nil || rp != pp || !loopback(rh) || !loopback(ph) || rh == ph {
		return ""
	}
	return pu.Scheme + "://" + pu.Host + r.URL.RequestURI()
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// checkToken checks a presented admin token against the lockout: a locked
// out address is refused (429, with how long) whatever it sends.
func (s *Server) checkToken(w http.ResponseWriter, r *http.Request, given string) (ok bool, locked time.Duration) {
	ip := clientIP(r)
	if left, l := s.lock.Locked(ip); l {
		w.Header().Set("Retry-After", fmt.Sprint(int(left.Seconds())+1))
		return false, left
	}
	if given == "" {
		// No token at all is not a guess (a scraper or a browser without
		// its header): refused, but it does not lock the address out.
		return false, 0
	}
	if !equalSecret(given, s.opts.Token) {
		if d, n := s.lock.Fail(ip, ""); d > 0 {
			s.opts.Log.Warn("admin: address locked out after wrong admin tokens; every attempt from it is refused until the lock ends",
				"client", ip, "wrong_tokens", n, "locked_for", d.String())
		}
		return false, 0
	}
	s.lock.Success(ip, "")
	return true, 0
}

// api requires "Authorization: Bearer <admin token>".
func (s *Server) api(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ok, locked := s.checkToken(w, r, given)
		if !ok {
			if locked > 0 {
				writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many wrong admin tokens from this address: locked out for %s more (every attempt is refused until then)", locked.Round(time.Second)))
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="oauthrelay"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <admin.token>")
			return
		}
		h(w, r)
	})
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) sessionOf(r *http.Request) (string, session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return "", session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[c.Value]
	if !ok || time.Now().After(sess.expires) {
		delete(s.sessions, c.Value)
		return "", session{}, false
	}
	return c.Value, sess, true
}

// page requires a session; POSTs also need the session's CSRF token.
func (s *Server) page(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sess, ok := s.sessionOf(r)
		if !ok {
			if r.Method == http.MethodGet {
				// Back to the page asked for (a Connect link) after logging in.
				to := "/login"
				if r.URL.Path != "/" {
					to += "?next=" + url.QueryEscape(r.URL.RequestURI())
				}
				http.Redirect(w, r, to, http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet {
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.csrf)) != 1 {
				http.Error(w, "CSRF check failed: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r.WithContext(contextWithCSRF(r.Context(), sess.csrf)))
	})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("request body too large (at most %d bytes)", MaxRequestBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	if ok, locked := s.checkToken(w, r, r.PostFormValue("token")); !ok {
		if locked > 0 {
			renderLogin(w, http.StatusTooManyRequests, fmt.Sprintf("Too many wrong tokens from this address: locked out for %s more.", locked.Round(time.Second)), safeNext(r.PostFormValue("next")))
			return
		}
		s.opts.Log.Warn("admin: wrong admin token at login", "client", clientIP(r))
		renderLogin(w, http.StatusUnauthorized, "That is not the admin token.", safeNext(r.PostFormValue("next")))
		return
	}
	id := randomToken()
	s.mu.Lock()
	for k, v := range s.sessions {
		if time.Now().After(v.expires) {
			delete(s.sessions, k)
		}
	}
	s.sessions[id] = session{csrf: randomToken(), expires: time.Now().Add(s.opts.SessionLifetime)}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: strings.HasPrefix(s.opts.PublicURL, "https://"),
		MaxAge: int(s.opts.SessionLifetime / time.Second)})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if id, _, ok := s.sessionOf(r); ok {
		s.mu.Lock()
		delete(s.sessions, id)
		s.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// Ready reports what /readyz checks.
type Ready struct {
	Ready             bool     `json:"ready"`
	Spool             string   `json:"spool"`
	Listener          string   `json:"listener"`
	AccountsAttention []string `json:"accounts_needing_attention,omitempty"`
}

func (s *Server) ready() Ready {
	rd := Ready{Ready: true, Spool: "writable", Listener: "accepting"}
	if err := s.opts.Queue.CheckWritable(); err != nil {
		rd.Ready, rd.Spool = false, err.Error()
	}
	if s.opts.ListenerUp != nil {
		if err := s.opts.ListenerUp(); err != nil {
			rd.Ready, rd.Listener = false, err.Error()
		}
	}
	for _, a := range s.opts.Accounts.States() {
		if a.State != tokens.Connected {
			rd.AccountsAttention = append(rd.AccountsAttention, a.Account+": "+string(a.State))
		}
	}
	return rd
}

// readyz: ready when the spool is writable and the listener accepts;
// accounts that need attention are reported but do not make it unready
// (mail is still accepted and kept).
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := s.ready()
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
