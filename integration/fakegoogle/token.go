package fakegoogle

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

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
		f := o.faults[0]
		o.faults = o.faults[1:]
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(f.Status)
		fmt.Fprint(w, f.Body)
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

// userID is the stable numeric id Google gives an account ("sub").
func userID(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	return fmt.Sprintf("1%020d", binary.BigEndian.Uint64(sum[:8]))
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
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
