package fakegoogle

import (
	"crypto/rand"
	"net/http"
	"strings"
)

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
