package configs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The listener's limits against hostile clients (issue 12) and the null
// sender's account (issue 13): defaults, what 0 stands for, and every
// value serve would misuse refused with the key named.
func TestValidate_ListenLimitsAndNullSenderAccount(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Accounts = []Account{
			{Name: "helpdesk", Tenant: "t", ClientID: "c", Mailbox: "a@b.c", Senders: []string{"*@b.c"}},
			{Name: "alerts", Tenant: "t", ClientID: "c", Mailbox: "x@y.z", Senders: []string{"*@y.z"}},
		}
		for i := range c.Accounts {
			AccountDefaults(&c.Accounts[i])
		}
		return c
	}
	d := base()
	if ps := Validate(&d); len(ps) != 0 {
		t.Fatalf("defaults should be valid: %v", ps)
	}
	if got := d.Listen.SessionsPerClient(); got != 50 {
		t.Errorf("sessions per client by default = %d, want half of max_sessions (50)", got)
	}
	if d.Listen.MaxJunkCommands != 100 || d.Listen.MaxSessionTime != time.Hour {
		t.Errorf("max_junk_commands %d, max_session_time %v: want 100 and 1h", d.Listen.MaxJunkCommands, d.Listen.MaxSessionTime)
	}
	if got := d.Listen.DataTime(); got != 35*time.Minute {
		t.Errorf("DATA time for 35 MiB = %v, want 35m (a minute per MiB)", got)
	}
	if got := d.NullSenderAccount(); got != "helpdesk" {
		t.Errorf("null sender account by default = %q, want the first account", got)
	}
	small := Listen{MaxSessions: 1, MaxMessageBytes: 1 << 20}
	if small.SessionsPerClient() != 1 || small.DataTime() != 10*time.Minute {
		t.Errorf("small: %d sessions per client, %v for DATA; want 1 and 10m", small.SessionsPerClient(), small.DataTime())
	}

	for _, tt := range []struct {
		name   string
		change func(c *Config)
		key    string
	}{
		{"negative per-client cap", func(c *Config) { c.Listen.MaxSessionsPerClient = -1 }, "listen.max_sessions_per_client"},
		{"per-client cap over the total", func(c *Config) { c.Listen.MaxSessionsPerClient = 101 }, "listen.max_sessions_per_client"},
		{"junk limit too low", func(c *Config) { c.Listen.MaxJunkCommands = 3 }, "listen.max_junk_commands"},
		{"no session time", func(c *Config) { c.Listen.MaxSessionTime = 0 }, "listen.max_session_time"},
		{"negative DATA time", func(c *Config) { c.Listen.MaxDataTime = -time.Second }, "listen.max_data_time"},
		{"unknown null sender account", func(c *Config) { c.Listen.NullSenderAccount = "nobody" }, "listen.null_sender_account"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(&c)
			ps := Validate(&c)
			if len(ps) != 1 || ps[0].Key != tt.key {
				t.Fatalf("want one problem at %s, got %v", tt.key, ps)
			}
		})
	}
	c := base()
	c.Listen.NullSenderAccount = "alerts"
	c.Listen.MaxSessionsPerClient = 100
	if ps := Validate(&c); len(ps) != 0 || c.NullSenderAccount() != "alerts" {
		t.Errorf("a named account and a cap equal to the total should pass: %v", ps)
	}
	c.Listen.NullSenderAccount = "nobody"
	if ps := Validate(&c); len(ps) != 1 || !strings.Contains(ps[0].Msg, "helpdesk, alerts") {
		t.Errorf("the problem should list the accounts: %v", ps)
	}
}

func TestLoad_ListenLimitsFromFileAndEnvironment(t *testing.T) {
	file := writeFile(t, minimal+"listen:\n  max_session_time: 30m\n  max_data_time: 20m\n  null_sender_account: helpdesk\n")
	got, err := Load(LoadOptions{File: file, Env: []string{"OAUTHRELAY_LISTEN_MAX_SESSIONS_PER_CLIENT=5", "OAUTHRELAY_LISTEN_MAX_JUNK_COMMANDS=20"}})
	if err != nil {
		t.Fatal(err)
	}
	l := got.Listen
	if l.MaxSessionTime != 30*time.Minute || l.DataTime() != 20*time.Minute || l.SessionsPerClient() != 5 || l.MaxJunkCommands != 20 || got.NullSenderAccount() != "helpdesk" {
		t.Errorf("loaded %+v", l)
	}
	_, err = Load(LoadOptions{File: file, Env: []string{"OAUTHRELAY_LISTEN_MAX_SESSION_TIME=3600"}})
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || !strings.Contains(ps[0].String(), "MAX_SESSION_TIME: 3600 has no unit") {
		t.Errorf("a bare number for a duration: %v", err)
	}
}
