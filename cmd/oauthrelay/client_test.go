package main

import (
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// `accounts` shows each account's protocols and open IMAP/POP3 sessions,
// and below the table each refused protocol with what to do.
func TestPrintAccounts_ProtocolsSessionsRefusals(t *testing.T) {
	var b strings.Builder
	err := printAccounts(&b, []tokens.AccountState{
		{Account: "helpdesk", Mailbox: "helpdesk@contoso.test", Flow: "device_code", State: tokens.Connected,
			Protocols: []string{"smtp", "imap", "pop3"}, Sessions: map[string]int{"pop3": 1, "imap": 2},
			Refused: map[string]tokens.Explanation{"pop3": {Code: "-ERR Authentication failure", Title: "Microsoft refused the POP3 login",
				Action: "Set-CASMailbox -Identity helpdesk@contoso.test -PopEnabled $true"}}},
		{Account: "alerts", Mailbox: "alerts@contoso.test", Flow: "client_credentials", State: tokens.Connected},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	for _, want := range []struct {
		line int
		text string
	}{
		{0, "PROTOCOLS"}, {0, "OPEN SESSIONS"},
		{1, "smtp,imap,pop3"}, {1, "imap 2, pop3 1"}, {1, "POP3 logins refused (below)"},
		{2, "alerts"}, {2, "smtp "},
		{3, "helpdesk: POP3 logins stopped (mail is not affected): -ERR Authentication failure: Microsoft refused the POP3 login — Set-CASMailbox -Identity helpdesk@contoso.test -PopEnabled $true; then: oauthrelay accounts retry helpdesk"},
	} {
		if len(lines) <= want.line || !strings.Contains(lines[want.line], want.text) {
			t.Errorf("line %d lacks %q:\n%s", want.line, want.text, out)
		}
	}
}

// `accounts` says how each account signs in, and warns below the table
// about a client certificate that expires soon.
func TestPrintAccounts_CredentialAndCertificateWarning(t *testing.T) {
	var b strings.Builder
	err := printAccounts(&b, []tokens.AccountState{
		{Account: "alerts", Mailbox: "alerts@contoso.test", Flow: "client_credentials", State: tokens.Connected,
			Provider: "microsoft", Cloud: "global", Credential: "certificate", CertificateExpiry: time.Date(2027, 1, 5, 0, 0, 0, 0, time.UTC),
			CertificateWarning: "the client certificate expires on 2027-01-05 (in 12 days): make a new certificate"},
		{Account: "gmail", Mailbox: "ops@example.com", Flow: "service_account", State: tokens.Connected,
			Provider: "google", Credential: "service account"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	for _, want := range []struct {
		line int
		text string
	}{
		{0, "SIGNS IN WITH"},
		{1, "microsoft/global: certificate (expires 2027-01-05)"}, {1, "renew the client certificate (below)"},
		{2, "google: service account"},
		{3, "alerts: the client certificate expires on 2027-01-05 (in 12 days): make a new certificate"},
	} {
		if len(lines) <= want.line || !strings.Contains(lines[want.line], want.text) {
			t.Errorf("line %d lacks %q:\n%s", want.line, want.text, out)
		}
	}
}
