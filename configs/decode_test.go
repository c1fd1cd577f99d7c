package configs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// loadYAML loads body as the config file with exactly env as the environment.
func loadYAML(t *testing.T, body string, env ...string) (*Loaded, Problems) {
	t.Helper()
	if env == nil {
		env = []string{}
	}
	got, err := Load(LoadOptions{File: writeFile(t, body), Env: env})
	var ps Problems
	if err != nil && !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	return got, ps
}

// wantProblems checks that ps is exactly the problems in want (key → text
// the message must contain), each reported once.
func wantProblems(t *testing.T, ps Problems, want map[string]string) {
	t.Helper()
	seen := map[string]int{}
	for _, p := range ps {
		seen[p.Key]++
		fix, ok := want[p.Key]
		if !ok {
			t.Errorf("unexpected problem %q", p)
			continue
		}
		if !strings.Contains(p.Msg, fix) {
			t.Errorf("problem %q lacks %q", p, fix)
		}
		if strings.Contains(p.Msg, "decoding failed") || strings.Contains(p.Msg, "time: unknown") || strings.Contains(p.Msg, "time: invalid") {
			t.Errorf("problem %q is the decoder's raw error, not a fix", p)
		}
	}
	for key := range want {
		switch seen[key] {
		case 0:
			t.Errorf("no problem reported for %s", key)
		case 1:
		default:
			t.Errorf("%s reported %d times", key, seen[key])
		}
	}
	if t.Failed() {
		t.Logf("all problems:\n%v", ps)
	}
}

func TestLoad_DurationWithoutUnitIsAnError(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		key  string
		msg  string
	}{
		{"int in the file", "listen:\n  read_timeout: 300\n", nil,
			"listen.read_timeout", "300 has no unit — e.g. 300s or 5m"},
		{"float in the file", "delivery:\n  dial_timeout: 1.5\n", nil,
			"delivery.dial_timeout", "1.5 has no unit — e.g. 1.5s or 1.5m"},
		{"quoted number in the file", "tokens:\n  refresh_skew: \"60\"\n", nil,
			"tokens.refresh_skew", "60 has no unit — e.g. 60s or 1m"},
		{"number in a list", "delivery:\n  retry: [1m, 600]\n", nil,
			"delivery.retry[1]", "600 has no unit — e.g. 600s or 10m"},
		{"environment", "", []string{"OAUTHRELAY_LISTEN_READ_TIMEOUT=300"},
			"OAUTHRELAY_LISTEN_READ_TIMEOUT", "300 has no unit — e.g. 300s or 5m"},
		{"environment list", "", []string{"OAUTHRELAY_DELIVERY_RETRY=1m,90"},
			"OAUTHRELAY_DELIVERY_RETRY", "item 2: 90 has no unit — e.g. 90s or 1m30s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ps := loadYAML(t, minimal+tt.file, tt.env...)
			wantProblems(t, ps, map[string]string{tt.key: tt.msg})
			if got != nil && got.Listen.ReadTimeout != 5*time.Minute {
				t.Errorf("listen.read_timeout = %v: a bad value must leave the default", got.Listen.ReadTimeout)
			}
		})
	}
	// Zero needs no unit: it is the same in all of them.
	if got, ps := loadYAML(t, minimal+"tokens:\n  refresh_skew: 0\n"); len(ps) != 0 || got.Tokens.RefreshSkew != 0 {
		t.Errorf("refresh_skew: 0 should load as zero: %v", ps)
	}
}

func TestLoad_EveryDecodingProblemAtOnce(t *testing.T) {
	_, ps := loadYAML(t, `
listen:
  addr: nonsense
  read_timeout: 5d
  max_sessions: sixteen
  allowed_networks: {home: 10.0.0.0/8}
  auth:
    required: maybe
delivery:
  retry: [1m, soon]
  jitter: lots
  max_age: [120h]
log: debug
accounts:
  - name: helpdesk
    tenant: contoso.onmicrosoft.com
    client_id: "0000"
    mailbox: helpdesk@contoso.com
    senders: {a: b}
  - name: [a, b]
    tenant: contoso.onmicrosoft.com
    client_id: "0000"
    mailbox: scanner@contoso.com
    senders: ["*@contoso.com"]
  - just a string
`, "OAUTHRELAY_DELIVERY_WORKERS=many", "OAUTHRELAY_UPSTREAM_INSECURE_ALLOW_PLAINTEXT=perhaps",
		"OAUTHRELAY_ACCOUNTS_0_SENDERS=*@contoso.com", "OAUTHRELAY_TOKENS_BACKGROUND_REFRESH=1d")
	wantProblems(t, ps, map[string]string{
		"listen.addr":                 `"nonsense" is not host:port`,                                   // validation, beside the decoding problems
		"listen.read_timeout":         `"5d": d (days) is not a unit — write hours, e.g. 120h`,         // duration
		"listen.max_sessions":         `"sixteen" is not a whole number — e.g. 100`,                    // int
		"listen.allowed_networks":     `is a mapping; expected a list`,                                 // list
		"listen.auth.required":        `"maybe" is not true or false`,                                  // bool
		"delivery.retry[1]":           `"soon" is not a duration — a number with a unit (ms, s, m, h)`, // list item
		"delivery.jitter":             `"lots" is not a number — e.g. 0.1`,                             // float
		"delivery.max_age":            `is a list; expected a duration`,                                // kind
		"log":                         `is a single value; expected a mapping of keys (level, format)`, // section
		"accounts[0].senders":         `is a mapping; expected a list`,                                 // account list (the environment's value then wins)
		"accounts[1].name":            `is a list; expected a text value`,                              // account string
		"accounts[2]":                 `must be a mapping of keys (name, tenant, client_id, …)`,        // account item
		"OAUTHRELAY_DELIVERY_WORKERS": `"many" is not a whole number — e.g. 16`,                        // env int
		"OAUTHRELAY_UPSTREAM_INSECURE_ALLOW_PLAINTEXT": `"perhaps" is not true or false`,                       // env bool
		"OAUTHRELAY_TOKENS_BACKGROUND_REFRESH":         `"1d": d (days) is not a unit — write hours, e.g. 24h`, // env duration
	})
	// accounts[1] and [2] miss fields because of the problems above; those
	// are not reported again.
}

func TestLoad_DecodingProblemsInAccountsAndEnvAccounts(t *testing.T) {
	_, ps := loadYAML(t, `
accounts:
  - name: helpdesk
    tenant: contoso.onmicrosoft.com
    client_id: "0000"
    mailbox: helpdesk@contoso.com
    senders: {a: b}
`, "OAUTHRELAY_ACCOUNTS_1_NAME=second", "OAUTHRELAY_ACCOUNTS_1_TENANT=contoso.com",
		"OAUTHRELAY_ACCOUNTS_1_CLIENT_ID=id", "OAUTHRELAY_ACCOUNTS_1_MAILBOX=second@contoso.com")
	wantProblems(t, ps, map[string]string{
		"accounts[0].senders": "is a mapping; expected a list",
		"accounts[1].senders": "empty — list the envelope senders",
	})
}

func TestLoad_AccountsMustBeAList(t *testing.T) {
	_, ps := loadYAML(t, "accounts:\n  name: helpdesk\n  tenant: t\n")
	wantProblems(t, ps, map[string]string{
		"accounts": "is a mapping; expected a list of accounts",
	})
}

func TestLoad_InvalidYAMLIsAProblem(t *testing.T) {
	_, ps := loadYAML(t, "listen:\n  addr: [127.0.0.1:2525\n", "OAUTHRELAY_LISTEN_MAX_SESSIONS=x")
	if len(ps) != 2 || !strings.Contains(ps[0].Msg, "is not valid YAML") || !strings.Contains(ps[0].Msg, "line") ||
		ps[1].Key != "OAUTHRELAY_LISTEN_MAX_SESSIONS" {
		t.Fatalf("want the YAML error with its line and the environment's problem, got:\n%v", ps)
	}
}

// Issue 12 item 7: a string key keeps the text as typed, whatever YAML
// would have made of it.
func TestLoad_StringsAreTheLiteralText(t *testing.T) {
	got, ps := loadYAML(t, `
admin:
  token: 0x1234567890abcdef
listen:
  hostname: 1e3
accounts:
  - name: helpdesk
    tenant: 0012
    client_id: 00000000
    client_secret: 0o17_000
    flow: client_credentials
    mailbox: helpdesk@contoso.com
    senders: ["*@contoso.com"]
    authority: https://login.microsoftonline.com
  - name: b
    tenant: t
    client_id: 1_000
    client_secret: yes
    flow: client_credentials
    mailbox: b@contoso.com
    senders: [0x1@contoso.com]
`)
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	for _, c := range []struct{ key, got, want string }{
		{"admin.token", got.Admin.Token, "0x1234567890abcdef"},
		{"listen.hostname", got.Listen.Hostname, "1e3"},
		{"accounts[0].tenant", got.Accounts[0].Tenant, "0012"},
		{"accounts[0].client_id", got.Accounts[0].ClientID, "00000000"},
		{"accounts[0].client_secret", got.Accounts[0].ClientSecret, "0o17_000"},
		{"accounts[1].client_id", got.Accounts[1].ClientID, "1_000"},
		{"accounts[1].client_secret", got.Accounts[1].ClientSecret, "yes"},
		{"accounts[1].senders[0]", got.Accounts[1].Senders[0], "0x1@contoso.com"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want the literal %q", c.key, c.got, c.want)
		}
	}
}

// Effective's output is a configuration file: loading it gives the same
// configuration back (integration tests run serve on it).
func TestLoad_EffectiveRoundTrips(t *testing.T) {
	first, ps := loadYAML(t, minimal+"delivery:\n  retry: [200ms, 1h30m]\n  rate_per_minute: 0.5\nlisten:\n  auth:\n    required: true\n    users_file: /etc/oauthrelay/users\n")
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	out, err := Effective(&first.Config)
	if err != nil {
		t.Fatal(err)
	}
	second, ps := loadYAML(t, string(out))
	if len(ps) != 0 {
		t.Fatalf("%v\n%s", ps, out)
	}
	a, _ := Effective(&second.Config)
	if string(a) != string(out) {
		t.Errorf("round trip changed the configuration:\n%s\n---\n%s", out, a)
	}
}
