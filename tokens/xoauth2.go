package tokens

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/emersion/go-sasl"
)

// XOAuth2 is the SASL XOAUTH2 mechanism as Microsoft 365 and Google use it
// (go-sasl has none on purpose). The token is sent as the initial response.
type XOAuth2 struct {
	User  string // the mailbox (for a shared mailbox, the shared address)
	Token string // the access token
}

var _ sasl.Client = (*XOAuth2)(nil)

// Start returns "user=<mailbox>\x01auth=Bearer <token>\x01\x01".
func (x *XOAuth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.User + "\x01auth=Bearer " + x.Token + "\x01\x01"), nil
}

// Next fails on any challenge: XOAUTH2 has no second step, and a server that
// sends one (Google sends a base64 JSON error) is rejecting the token.
// Returning (nil, nil) here would make go-smtp report success without
// reading the final 535.
func (x *XOAuth2) Next(challenge []byte) ([]byte, error) {
	msg := string(challenge)
	if b, err := base64.StdEncoding.DecodeString(msg); err == nil {
		msg = string(b)
	}
	var je struct {
		Status string `json:"status"`
	}
	if json.Unmarshal([]byte(msg), &je) == nil && je.Status != "" {
		return nil, fmt.Errorf("xoauth2: token rejected (status %s)", je.Status)
	}
	return nil, fmt.Errorf("xoauth2: unexpected server challenge %q", truncate(msg, 200))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
