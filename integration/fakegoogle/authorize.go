package fakegoogle

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"time"
)

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
