package tokens

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// stateLifetime is how long a Connect link's state stays valid.
const stateLifetime = 10 * time.Minute

type pendingConnect struct {
	account  string
	verifier string
	created  time.Time
}

// ConnectHandler serves the Connect flow (authorization code + PKCE):
//
//	GET /connect/{account}   redirects to Microsoft's sign-in with state,
//	                         PKCE S256, login_hint=<mailbox>, prompt=select_account
//	GET /oauth/callback      checks state (single use, 10 min), exchanges the
//	                         code, stores the refresh token, shows the result
//
// The admin server mounts it behind its own login; the callback is guarded
// by the state, which only a browser that started the flow holds.
func (m *Manager) ConnectHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /connect/{account}", m.handleConnect)
	mux.HandleFunc("GET /oauth/callback", m.handleCallback)
	return mux
}

// ConnectURL returns the URL that starts a Connect for account, given the
// admin server's public URL.
func ConnectURL(publicURL, account string) string {
	return strings.TrimRight(publicURL, "/") + "/connect/" + account
}

// CallbackURL is the OAuth redirect URI for the admin server's public URL:
// what the app registration must list.
func CallbackURL(publicURL string) string {
	return strings.TrimRight(publicURL, "/") + "/oauth/callback"
}

func (m *Manager) handleConnect(w http.ResponseWriter, r *http.Request) {
	a, err := m.account(r.PathValue("account"))
	if err != nil {
		renderResult(w, http.StatusNotFound, result{Title: "No such account", Detail: err.Error()})
		return
	}
	if !a.delegated() {
		renderResult(w, http.StatusBadRequest, result{Title: "Nothing to connect",
			Detail: "Account " + a.Name + " signs in app-only (" + a.Flow + "): it needs no sign-in. Its state shows whether its credential and permissions work."})
		return
	}
	state := randomString(32)
	verifier := oauth2.GenerateVerifier()
	m.pendMu.Lock()
	now := m.opts.Now()
	for k, p := range m.pending {
		if now.Sub(p.created) > stateLifetime {
			delete(m.pending, k)
		}
	}
	m.pending[state] = pendingConnect{account: a.Name, verifier: verifier, created: now}
	m.pendMu.Unlock()
	opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("login_hint", a.Mailbox)}, a.authCodeOptions()...)
	u := a.oauth.AuthCodeURL(state, opts...)
	http.Redirect(w, r, u, http.StatusFound)
}

func (m *Manager) handleCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	m.pendMu.Lock()
	p, ok := m.pending[state]
	delete(m.pending, state) // single use, whatever happens next
	m.pendMu.Unlock()
	if !ok || state == "" || m.opts.Now().Sub(p.created) > stateLifetime {
		renderResult(w, http.StatusBadRequest, result{Title: "This sign-in link is not valid any more",
			Detail: "It expired, was already used, or was not started from this relay.",
			Action: "Go back to the status page and press Connect again.", Failed: true})
		return
	}
	a := m.accounts[p.account]
	if e := q.Get("error"); e != "" {
		st, ex := explainAuthorizeError(e, q.Get("error_description"), a.Account, m.opts.RedirectURL)
		m.log.Warn("tokens: sign-in refused", "account", a.Name, "error", e, "explanation", ex.String())
		if st == Misconfigured {
			m.setState(a, st, ex)
		}
		renderResult(w, http.StatusOK, result{Title: "Not connected: " + ex.Title, Detail: ex.Detail, Action: ex.Action, URL: ex.URL, Account: a.Name, Failed: true})
		return
	}
	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, m.opts.HTTPClient)
	tok, err := a.oauth.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		st, ex, transient := classify(err, a.Account, m.opts.RedirectURL)
		if transient {
			ex.Action = "try again in a minute"
		} else if st == Misconfigured {
			m.setState(a, st, ex)
		}
		renderResult(w, http.StatusBadGateway, result{Title: "Not connected: " + ex.Title, Detail: ex.Detail, Action: ex.Action, URL: ex.URL, Account: a.Name, Failed: true})
		return
	}
	upn, err := m.storeGrant(a, tok)
	if err != nil {
		renderResult(w, http.StatusInternalServerError, result{Title: "Not connected", Detail: err.Error(), Account: a.Name, Failed: true})
		return
	}
	res := result{Title: "Connected", Account: a.Name,
		Detail: fmt.Sprintf("Connected as %s; mail for %s flows now.", orUnknown(upn), a.Mailbox)}
	if w := WrongUser(upn, a.Mailbox); w != "" {
		res.Title = "Connected — but not as " + a.Mailbox
		res.Detail = fmt.Sprintf("Connected as %s. Mail for %s flows only if %s may send as it.", upn, a.Mailbox, upn)
		res.Action = "You " + w + ". Without that right Microsoft will answer 535 5.7.3 and the relay will hold the mail and say so here."
		if a.google() {
			res.Detail = fmt.Sprintf("Connected as %s, but Gmail accepts a token only for the account that signed in: mail for %s will not flow.", upn, a.Mailbox)
			res.Action = "Press Connect again and sign in as " + a.Mailbox + " (Google's account chooser: use another account)."
		}
	}
	renderResult(w, http.StatusOK, res)
}

func orUnknown(s string) string {
	if s == "" {
		return "(the signed-in user)"
	}
	return s
}

// explainAuthorizeError explains an error Microsoft redirected back with.
func explainAuthorizeError(e, desc string, a Account, redirectURI string) (State, Explanation) {
	code := 0
	if m := aadstsRe.FindStringSubmatch(desc); m != nil {
		fmt.Sscan(m[1], &code)
	}
	switch {
	case e == "consent_required" || code == 65001 || code == 90094:
		return ExplainAADSTS(90094, e, a, redirectURI)
	case e == "access_denied":
		return NotConnected, Explanation{Code: e, Title: "the sign-in was cancelled or the permissions were declined",
			Detail: "Whoever signed in did not approve the permissions, or an administrator must approve them first.",
			Action: "press Connect again and accept; if an approval request is shown, send the admin consent link to an administrator",
			URL:    a.AdminConsentURL(redirectURI)}
	case e == "interaction_required" || e == "login_required":
		return NotConnected, Explanation{Code: e, Title: "Microsoft needs more from the sign-in (MFA or a Conditional Access policy)",
			Action: "press Connect again and complete every step"}
	case code != 0:
		return ExplainAADSTS(code, e, a, redirectURI)
	}
	return NotConnected, Explanation{Code: e, Title: a.ProviderName() + " refused the sign-in", Detail: desc, Action: "press Connect again"}
}

// DeviceCode is what a person needs to complete a device-code sign-in.
type DeviceCode struct {
	UserCode        string
	VerificationURI string
	Message         string
	Expires         time.Time
}

// ConnectDevice runs the device-code flow for account: show is called once
// with the code to enter; ConnectDevice then polls until the sign-in is done,
// declined or expired, and stores the grant. It returns the signed-in user.
func (m *Manager) ConnectDevice(ctx context.Context, name string, show func(DeviceCode)) (string, error) {
	a, err := m.account(name)
	if err != nil {
		return "", err
	}
	if !a.delegated() {
		return "", fmt.Errorf("account %s signs in app-only (%s) and needs no sign-in", name, a.Flow)
	}
	if a.google() {
		return "", fmt.Errorf("account %s is a Google account: Google's device flow does not allow the Gmail scope (%s) — connect it on the Connect page instead (oauthrelay connect %s, or the status page's Connect button; through an SSH tunnel to the admin port on a headless server)", name, GoogleScope, name)
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, m.opts.HTTPClient)
	da, err := a.oauth.DeviceAuth(ctx)
	if err != nil {
		st, ex, transient := classify(err, a.Account, m.opts.RedirectURL)
		if transient {
			return "", fmt.Errorf("%w: %s", ErrTransient, ex.Title)
		}
		if st == Misconfigured { // as at the Connect page's callback
			m.setState(a, st, ex)
		}
		return "", &AccountError{Account: name, State: st, Explanation: ex}
	}
	show(DeviceCode{UserCode: da.UserCode, VerificationURI: da.VerificationURI, Expires: da.Expiry,
		Message: fmt.Sprintf("To connect %s, open %s in a browser, enter the code %s, and sign in as %s.", name, da.VerificationURI, da.UserCode, a.Mailbox)})
	tok, err := a.oauth.DeviceAccessToken(ctx, da)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			switch re.ErrorCode {
			case "authorization_declined":
				return "", errors.New("the sign-in was declined; run the command again to retry")
			case "expired_token":
				return "", errors.New("the code expired before the sign-in was completed; run the command again")
			case "bad_verification_code":
				return "", errors.New("the device code was not recognised by Microsoft; run the command again")
			}
			st, ex, _ := classify(err, a.Account, m.opts.RedirectURL)
			if st == Misconfigured {
				m.setState(a, st, ex)
			}
			return "", &AccountError{Account: name, State: st, Explanation: ex}
		}
		return "", err
	}
	return m.storeGrant(a, tok)
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

type result struct {
	Title, Detail, Action, URL, Account string
	Failed                              bool
}

var resultPage = template.Must(template.New("result").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} — oauthrelay</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}.bad{color:#a31515}.ok{color:#17663a}a.button{display:inline-block;padding:.5rem 1rem;background:#0b5cad;color:#fff;border-radius:4px;text-decoration:none}
code{word-break:break-all}</style></head><body>
<h1 class="{{if .Failed}}bad{{else}}ok{{end}}">{{.Title}}</h1>
{{if .Account}}<p>Account: <strong>{{.Account}}</strong></p>{{end}}
{{if .Detail}}<p>{{.Detail}}</p>{{end}}
{{if .Action}}<p><strong>What to do:</strong> {{.Action}}</p>{{end}}
{{if .URL}}<p>Admin consent link (an administrator opens it once and approves):<br><a href="{{.URL}}"><code>{{.URL}}</code></a></p>{{end}}
<p><a class="button" href="/">Back to the status page</a></p>
</body></html>`))

func renderResult(w http.ResponseWriter, status int, r result) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	resultPage.Execute(w, r)
}
