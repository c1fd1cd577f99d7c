package admin

import (
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// Each account shows its protocols and the IMAP/POP3 sessions open now; a
// protocol Microsoft refused is shown with its explanation and what to do,
// on the page (with Try again, though the account is connected) and in
// /api/accounts.
func TestAdmin_InboundSessionsAndProtocolRefusals(t *testing.T) {
	s := newTestServer(t, func(o *Options) {
		o.InboundSessions = func() map[string]map[string]int { return map[string]map[string]int{"helpdesk": {"imap": 2, "pop3": 1}} }
	})
	st := helpdeskState(tokens.Connected)
	st.Protocols = []string{"smtp", "imap", "pop3"}
	st.Refused = map[string]tokens.Explanation{"pop3": {Code: "-ERR Authentication failure: unknown user name or bad password.",
		Title: "Microsoft refused the POP3 login for helpdesk@contoso.test", Detail: "POP3 is off for the mailbox",
		Action: "in Exchange Online PowerShell run: Set-CASMailbox -Identity helpdesk@contoso.test -PopEnabled $true"}}
	s.a.states = []tokens.AccountState{st,
		{Account: "alerts", Mailbox: "alerts@contoso.test", Flow: tokens.FlowClientCredentials, State: tokens.Connected, Protocols: []string{"smtp"}}}

	c, _ := s.login(t)
	page := s.page("GET", "/", c, nil).Body.String()
	for _, want := range []string{
		`id="protocols-helpdesk">Protocols: smtp, imap, pop3 · open now: 2 imap 1 pop3</div>`,
		`id="protocols-alerts">Protocols: smtp</div>`,
		`id="refused-helpdesk-pop3"`, "<strong>pop3 logins stopped</strong> (mail is not affected)",
		"<code>-ERR Authentication failure: unknown user name or bad password.</code> Microsoft refused the POP3 login",
		"Set-CASMailbox -Identity helpdesk@contoso.test -PopEnabled $true",
		`id="retry-helpdesk"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(page, `id="retry-alerts"`) {
		t.Error("Try again for a connected account with no refusal")
	}

	accounts := decode[[]tokens.AccountState](t, s.api("GET", "/api/accounts", testToken))
	if len(accounts) != 2 {
		t.Fatalf("accounts %+v", accounts)
	}
	h := accounts[0]
	if h.Sessions["imap"] != 2 || h.Sessions["pop3"] != 1 || len(h.Protocols) != 3 ||
		!strings.Contains(h.Refused["pop3"].Action, "-PopEnabled $true") {
		t.Errorf("helpdesk in /api/accounts: %+v", h)
	}
	if accounts[1].Sessions != nil || accounts[1].Refused != nil {
		t.Errorf("alerts in /api/accounts: %+v", accounts[1])
	}
	status := decode[Status](t, s.api("GET", "/api/status", testToken))
	if status.Accounts[0].Sessions["imap"] != 2 {
		t.Errorf("/api/status accounts %+v", status.Accounts)
	}
}
