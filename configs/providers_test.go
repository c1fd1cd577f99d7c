package configs

import (
	"errors"
	"strings"
	"testing"
)

// loadAccount loads minimal's account with extra keys and returns the
// config, or the problems.
func loadAccount(t *testing.T, extra string) (*Config, Problems) {
	t.Helper()
	body := minimal + extra
	got, err := Load(LoadOptions{File: writeFile(t, body), Env: []string{}})
	var ps Problems
	if errors.As(err, &ps) {
		return nil, ps
	}
	if err != nil {
		t.Fatal(err)
	}
	return &got.Config, nil
}

// One key sets where an account signs in and which servers it uses;
// the account's own upstream and authority, and upstream.addr, still win.
func TestProfile_CloudKindProviderSetEndpoints(t *testing.T) {
	cases := []struct {
		name, extra                           string
		authority, smtp, imap, pop3, resource string
	}{
		{"default is the global cloud", "", "https://login.microsoftonline.com", "smtp.office365.com:587", "outlook.office365.com:993", "outlook.office365.com:995", "https://outlook.office.com"},
		{"GCC High", "    cloud: usgov\n", "https://login.microsoftonline.us", "smtp.office365.us:587", "outlook.office365.us:993", "outlook.office365.us:995", "https://outlook.office365.us"},
		{"DoD", "    cloud: usgov-dod\n", "https://login.microsoftonline.us", "outlook-dod.office365.us:587", "outlook-dod.office365.us:993", "outlook-dod.office365.us:995", "https://outlook.office365.us"},
		{"21Vianet", "    cloud: china\n", "https://login.partner.microsoftonline.cn", "smtp.partner.outlook.cn:587", "partner.outlook.cn:993", "partner.outlook.cn:995", "https://partner.outlook.cn"},
		{"HVE", "    kind: hve\n    client_secret: s\n", "https://login.microsoftonline.com", "smtp-hve.office365.com:587", "outlook.office365.com:993", "outlook.office365.com:995", "https://outlook.office.com"},
		{"own upstream and authority win", "    cloud: usgov\n    upstream: mail.example:2525\n    authority: https://login.example\n", "https://login.example", "mail.example:2525", "outlook.office365.us:993", "outlook.office365.us:995", "https://outlook.office365.us"},
		{"Google", "    provider: google\n    client_secret: s\n", "https://accounts.google.com", "smtp.gmail.com:587", "imap.gmail.com:993", "pop.gmail.com:995", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, ps := loadAccount(t, tc.extra)
			if ps != nil {
				t.Fatal(ps)
			}
			a := &c.Accounts[0]
			if a.Authority != tc.authority || c.SMTPUpstream(a) != tc.smtp || c.IMAPUpstream(a) != tc.imap || c.POP3Upstream(a) != tc.pop3 || a.Profile().Resource != tc.resource {
				t.Errorf("authority %s smtp %s imap %s pop3 %s resource %s", a.Authority, c.SMTPUpstream(a), c.IMAPUpstream(a), c.POP3Upstream(a), a.Profile().Resource)
			}
			if tc.name == "HVE" && a.Flow != FlowClientCredentials {
				t.Errorf("an HVE account's flow defaults to %s, want client_credentials", a.Flow)
			}
		})
	}
	c, _ := loadAccount(t, "    cloud: usgov\nupstream:\n  addr: relay.example:587\n")
	if got := c.SMTPUpstream(&c.Accounts[0]); got != "relay.example:587" {
		t.Errorf("upstream.addr should win over the cloud's server: %s", got)
	}
}

// Every impossible combination names its key and the fix.
func TestProfile_ValidationNamesKeyAndFix(t *testing.T) {
	cases := []struct{ name, extra, key, says string }{
		{"unknown cloud", "    cloud: germany\n", "accounts[0].cloud", "global, usgov, usgov-dod, china"},
		{"GCC High by its name", "    cloud: GCC-High\n", "accounts[0].cloud", "GCC High is usgov"},
		{"HVE reading mail", "    kind: hve\n    client_secret: s\n    protocols: [smtp, imap]\n", "accounts[0].protocols[1]", "no mailbox to read"},
		{"unknown kind", "    kind: bulk\n", "accounts[0].kind", "mailbox, hve"},
		{"HVE delegated", "    kind: hve\n    flow: device_code\n", "accounts[0].flow", "Add-HVEAppAccess"},
		{"HVE outside the global cloud", "    kind: hve\n    client_secret: s\n    cloud: usgov\n", "accounts[0].kind", "global cloud only"},
		{"secret and certificate", "    flow: client_credentials\n    client_secret: s\n    client_certificate_file: c.pem\n    client_key_file: k.pem\n", "accounts[0].client_secret", "one credential"},
		{"certificate without key", "    flow: client_credentials\n    client_certificate_file: c.pem\n", "accounts[0].client_key_file", "private key"},
		{"certificate on a delegated account", "    client_certificate_file: c.pem\n    client_key_file: k.pem\n", "accounts[0].client_certificate_file", "client_credentials"},
		{"no credential", "    flow: client_credentials\n", "accounts[0].client_secret", "client_certificate_file"},
		{"Google device code", "    provider: google\n    client_secret: s\n    flow: device_code\n", "accounts[0].flow", "does not allow the Gmail scope"},
		{"Google without secret", "    provider: google\n", "accounts[0].client_secret", "Google requires"},
		{"Google service account without key", "    provider: google\n    flow: service_account\n", "accounts[0].service_account_file", "JSON key"},
		{"Google with a cloud", "    provider: google\n    client_secret: s\n    cloud: usgov\n", "accounts[0].cloud", "provider: microsoft"},
		{"Microsoft service account", "    flow: service_account\n", "accounts[0].flow", "Google's"},
		{"unknown provider", "    provider: yahoo\n", "accounts[0].provider", "microsoft or google"},
		{"bad upstream", "    upstream: smtp.office365.com\n", "accounts[0].upstream", "host:port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ps := loadAccount(t, tc.extra)
			for _, p := range ps {
				if p.Key == tc.key && strings.Contains(p.Msg, tc.says) {
					if len(ps) != 1 {
						t.Errorf("one mistake, %d problems: %v", len(ps), ps)
					}
					return
				}
			}
			t.Errorf("problems %v; want %s saying %q", ps, tc.key, tc.says)
		})
	}
}

// A sender pattern an earlier account already takes is a warning naming
// both: the first matching account wins.
func TestSenders_ShadowedPatternWarns(t *testing.T) {
	for _, tc := range []struct {
		q, p  string
		shade bool
	}{
		{"*", "alerts@contoso.com", true},
		{"*@contoso.com", "alerts@contoso.com", true},
		{"*@contoso.com", "*@contoso.com", true},
		{"*@*.contoso.com", "a@mail.contoso.com", true},
		{"*@*.contoso.com", "*@*.eu.contoso.com", true},
		{"*@contoso.com", "alerts@mail.contoso.com", false},
		{"alerts@contoso.com", "*@contoso.com", false},
		{"*@*.contoso.com", "a@contoso.com", false},
		{"a@contoso.com", "*", false},
	} {
		if got := senderCovers(tc.q, tc.p); got != tc.shade {
			t.Errorf("senderCovers(%q, %q) = %v", tc.q, tc.p, got)
		}
	}
	got, err := Load(LoadOptions{File: writeFile(t, minimal+`  - name: later
    tenant: contoso.onmicrosoft.com
    client_id: 0000
    mailbox: later@contoso.com
    senders: ["alerts@contoso.com", "x@other.example"]
`), Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	var ws []string
	for _, w := range got.Warnings {
		ws = append(ws, w.String())
	}
	if len(ws) != 1 || !strings.Contains(ws[0], "accounts[1].senders[0]") || !strings.Contains(ws[0], "accounts[0] (helpdesk") {
		t.Errorf("warnings %q", ws)
	}
}
