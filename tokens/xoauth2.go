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

	challenged bool
}

var _ sasl.Client = (*XOAuth2)(nil)

// Start returns "user=<mailbox>\x01auth=Bearer <token>\x01\x01".
func (x *XOAuth2) Start() (string, []byte, error) {
	x.challenged = false
	return "XOAUTH2", []byte("user=" + x.User + "\x01auth=Bearer " + x.Token + "\x01\x01"), nil
}

// Next answers the one challenge XOAUTH2 has: Google rejects a token with
// a base64 JSON error ({"status":"400",...}) and waits for an empty
// response before its final 535 (https://developers.google.com/gmail/imap/xoauth2-protocol),
// so the empty response is sent and the 535 is what the caller sees.
// Microsoft answers 535 at once. A second challenge, or one that is not
// such an error, fails: returning (nil, nil) would make go-smtp report
// success without reading the final reply.
func (x *XOAuth2) Next(challenge []byte) ([]byte, error) {
	msg := string(challenge)
	if b, err := base64.StdEncoding.DecodeString(msg); err == nil {
		msg = string(b)
	}
	var je struct {
		Status string `json:"status"`
	}
	if json.Unmarshal([]byte(msg), &je) == nil && je.Status != "" {
		if !x.challenged {
			x.challenged = true
			return []byte{}, nil
		}
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
