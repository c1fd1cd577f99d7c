package configs

import (
	"strings"
	"testing"
)

// The inbound listeners (issue 15) are off by default, and every value
// they would misuse is refused with its key named.
func TestValidate_Inbound(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Accounts = []Account{{Name: "helpdesk", Tenant: "t", ClientID: "c", Mailbox: "a@b.c", Senders: []string{"*@b.c"}}}
		AccountDefaults(&c.Accounts[0])
		return c
	}
	d := base()
	if ps := Validate(&d); len(ps) != 0 {
		t.Fatalf("defaults should be valid: %v", ps)
	}
	if d.Inbound.Enabled() {
		t.Error("inbound listeners must be off by default")
	}
	// The upstreams are empty: each account's provider and cloud decide.
	if d.Inbound.IMAP.Upstream != "" || d.Inbound.POP3.Upstream != "" || d.Inbound.MaxConnectionsPerAccount != 16 {
		t.Errorf("inbound defaults = %+v", d.Inbound)
	}
	cases := []struct {
		name, key string
		edit      func(*Config)
	}{
		{"imap without users file", "inbound.users_file", func(c *Config) { c.Inbound.IMAP.Addr = "127.0.0.1:1143" }},
		{"bad imap addr", "inbound.imap.addr", func(c *Config) { c.Inbound.UsersFile = "u"; c.Inbound.IMAP.Addr = "1143" }},
		{"bad imap upstream", "inbound.imap.upstream", func(c *Config) {
			c.Inbound.UsersFile = "u"
			c.Inbound.IMAP.Addr = "127.0.0.1:1143"
			c.Inbound.IMAP.Upstream = "outlook.office365.com"
		}},
		{"bad pop3 addr", "inbound.pop3.addr", func(c *Config) { c.Inbound.UsersFile = "u"; c.Inbound.POP3.Addr = "x" }},
		{"bad pop3 upstream", "inbound.pop3.upstream", func(c *Config) {
			c.Inbound.UsersFile = "u"
			c.Inbound.POP3.Addr = "127.0.0.1:1110"
			c.Inbound.POP3.Upstream = "outlook.office365.com"
		}},
		{"no connections", "inbound.max_connections_per_account", func(c *Config) { c.Inbound.MaxConnectionsPerAccount = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			ps := Validate(&c)
			if len(ps) != 1 || ps[0].Key != tc.key || strings.TrimSpace(ps[0].Msg) == "" {
				t.Fatalf("problems = %v, want one naming %s", ps, tc.key)
			}
		})
	}
}
