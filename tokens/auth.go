package tokens

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// Credential is what a client needs to sign in to Microsoft 365 as an
// account: a ready SASL client (XOAUTH2 with the account's mailbox and a
// valid access token) and when that token expires. The token itself stays
// in this package; Fingerprint names it in logs.
type Credential struct {
	SASL        sasl.Client
	Expiry      time.Time
	Fingerprint string
}

// Auth returns a credential for account's mailbox, from the cache when it
// can (see Token), for a delivery. While Microsoft refuses the account's
// login (SMTPAuthDisabled, SMTPAuthRefused) it returns an *AccountError
// instead: a delivery that was already lined up does not try a login that
// will fail (repeated failed logins get a mailbox throttled). SMTP delivery
// uses it today; IMAP and POP3 sign in the same way.
func (m *Manager) Auth(ctx context.Context, account string) (Credential, error) {
	if a, ok := m.accounts[account]; ok {
		a.mu.Lock()
		st, ex := a.state, a.expl
		a.mu.Unlock()
		if smtpState(st) {
			return Credential{}, &AccountError{Account: account, State: st, Explanation: ex}
		}
	}
	return m.Credential(ctx, account)
}

// Credential is Auth whatever the account's state: for the pre-flight
// check and Try again, which must see whether Microsoft still refuses.
func (m *Manager) Credential(ctx context.Context, account string) (Credential, error) {
	tok, err := m.Token(ctx, account)
	if err != nil {
		return Credential{}, err
	}
	return Credential{SASL: &XOAuth2{User: tok.Mailbox, Token: tok.AccessToken}, Expiry: tok.Expiry,
		Fingerprint: Fingerprint(tok.AccessToken)}, nil
}

// Grants is what an account's current access token allows, read from it
// for the pre-flight check.
type Grants struct {
	Scopes      []string  `json:"scopes,omitempty"` // delegated (scp)
	Roles       []string  `json:"roles,omitempty"`  // app-only (roles)
	User        string    `json:"user,omitempty"`   // who signed in (upn / preferred_username)
	Opaque      bool      `json:"opaque,omitempty"` // not a JWT: nothing could be read
	Expiry      time.Time `json:"expiry"`
	Fingerprint string    `json:"fingerprint"`
}

// Grants gets a token for account and reads its permissions. The token
// came from the token endpoint over TLS; this is a reading, not a
// verification (Microsoft verifies it when it is used).
func (m *Manager) Grants(ctx context.Context, account string) (Grants, error) {
	tok, err := m.Token(ctx, account)
	if err != nil {
		return Grants{}, err
	}
	g := Grants{Expiry: tok.Expiry, Fingerprint: Fingerprint(tok.AccessToken)}
	parts := strings.Split(tok.AccessToken, ".")
	var claims struct {
		Scp   string   `json:"scp"`
		Roles []string `json:"roles"`
		UPN   string   `json:"upn"`
		Pref  string   `json:"preferred_username"`
	}
	if len(parts) != 3 {
		g.Opaque = true
		return g, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil || json.Unmarshal(b, &claims) != nil {
		g.Opaque = true
		return g, nil
	}
	g.Scopes, g.Roles, g.User = strings.Fields(claims.Scp), claims.Roles, claims.UPN
	if g.User == "" {
		g.User = claims.Pref
	}
	return g, nil
}
