package tokens

import (
	"context"
	"slices"
	"strings"
)

// Refusals of IMAP and POP3 logins. Microsoft can refuse one protocol's
// XOAUTH2 login while another works (IMAP off for the mailbox, a sign-in
// that did not grant POP.AccessAsUser.All), so such a refusal is recorded
// for its protocol only: it stops further logins of that protocol (repeated
// failed logins get a mailbox throttled) and is logged, but it does not
// change the account's state, which pauses its mail. A sign-in or Retry
// clears it (putState with force).

// AuthFor is Auth for one protocol: "smtp" is Auth; for "imap" and "pop3"
// an SMTP refusal does not matter, but a refusal recorded by AuthRefused
// for that protocol returns an *AccountError (State is the account's,
// Explanation the protocol's).
func (m *Manager) AuthFor(ctx context.Context, account, protocol string) (Credential, error) {
	if protocol == "smtp" {
		return m.Auth(ctx, account)
	}
	if a, ok := m.accounts[account]; ok {
		a.mu.Lock()
		ex, refused := a.refused[protocol]
		st := a.state
		a.mu.Unlock()
		if refused {
			return Credential{}, &AccountError{Account: account, State: st, Explanation: ex}
		}
	}
	return m.Credential(ctx, account)
}

// AuthRefused records that Microsoft refused the account's XOAUTH2 login
// for protocol ("imap", "pop3") with a fresh token; reply is Microsoft's
// answer (no secret in it). It returns the explanation. Logins of that
// protocol are refused (AuthFor) until the account is signed in again or
// retried.
func (m *Manager) AuthRefused(account, protocol, reply string) Explanation {
	a, ok := m.accounts[account]
	if !ok {
		return ExplainProtocolAuth(protocol, reply, Account{Name: account}, "")
	}
	var by string
	var granted []string
	if rec, ok, err := m.opts.Store.Get(account); err == nil && ok {
		by, granted = rec.ConsentedBy, rec.Scopes
	}
	ex := ExplainProtocolAuth(protocol, reply, a.Account, by)
	if slices.Contains(missingProtocols(a.Account, granted), protocol) {
		// The sign-in did not grant it: that is the fix, before anything
		// on Microsoft's side.
		ex.Detail = "The sign-in did not grant " + a.protocolScope(protocol) + ". " + ex.Detail
		ex.Action = "press Connect (the account asks for " + protocol + " now) and sign in again; if it persists: " + ex.Action
	}
	a.mu.Lock()
	if a.refused == nil {
		a.refused = map[string]Explanation{}
	}
	_, already := a.refused[protocol]
	a.refused[protocol] = ex
	a.mu.Unlock()
	if already { // sessions refused at once say it once
		return ex
	}
	m.log.Warn("tokens: Microsoft refused the account's "+strings.ToUpper(protocol)+" login with a fresh token; its "+
		strings.ToUpper(protocol)+" logins stop until it is signed in again or retried",
		"account", account, "protocol", protocol, "explanation", ex.String())
	return ex
}

// ExplainProtocolAuth explains Microsoft's refusal of an IMAP or POP3
// XOAUTH2 login ("NO AUTHENTICATE failed.", "-ERR Authentication
// failure…"): Microsoft says no more than that, so the explanation lists
// what it can be.
func ExplainProtocolAuth(protocol, reply string, a Account, signedInAs string) Explanation {
	name, scope, cas := "IMAP", "IMAP.AccessAsUser.All", "-ImapEnabled $true"
	if protocol == "pop3" {
		name, scope, cas = "POP3", "POP.AccessAsUser.All", "-PopEnabled $true"
	}
	if a.google() {
		return Explanation{Code: strings.TrimSpace(reply),
			Title:  "Gmail refused the " + name + " login for " + a.Mailbox,
			Detail: name + " is off for the user, or the token does not carry " + GoogleScope + ".",
			Action: "turn " + name + " on (the user: Gmail settings > Forwarding and POP/IMAP; Workspace admin: Apps > Google Workspace > Gmail > End User Access > POP and IMAP access); then press Try again, or Connect again"}
	}
	ex := Explanation{Code: strings.TrimSpace(reply),
		Title:  "Microsoft refused the " + name + " login for " + a.Mailbox,
		Detail: "The token is valid for Entra ID but not for " + name + ": " + name + " is off for the mailbox, the sign-in did not grant " + scope + ", or the user who signed in has no Full Access on the mailbox.",
		Action: "in Exchange Online PowerShell run: Set-CASMailbox -Identity " + a.Mailbox + " " + cas +
			"; add " + strings.ToLower(name) + " to the account's protocols and Connect again if it is missing; then press Try again"}
	if signedInAs != "" && !strings.EqualFold(signedInAs, a.Mailbox) {
		ex.Action = "give " + signedInAs + " Full Access on " + a.Mailbox + " (Add-MailboxPermission -Identity " + a.Mailbox +
			" -User " + signedInAs + " -AccessRights FullAccess), or Connect and sign in as " + a.Mailbox + "; " + ex.Action
	}
	return ex
}

// Refused lists the protocols whose logins Microsoft refused (AuthRefused)
// and why, for the account.
func (m *Manager) Refused(account string) map[string]Explanation {
	a, ok := m.accounts[account]
	if !ok {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.refused) == 0 {
		return nil
	}
	out := make(map[string]Explanation, len(a.refused))
	for p, ex := range a.refused {
		out[p] = ex
	}
	return out
}
