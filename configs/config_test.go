package configs

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const minimal = `
accounts:
  - name: helpdesk
    tenant: contoso.onmicrosoft.com
    client_id: 0000
    mailbox: helpdesk@contoso.com
    senders: ["*@contoso.com"]
`

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "oauthrelay.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad_EveryExampleFile(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	if len(files) < 2 {
		t.Fatalf("expected example files in configs/, found %v", files)
	}
	env := []string{
		"OAUTHRELAY_ADMIN_TOKEN=0123456789abcdef", "HELPDESK_CLIENT_SECRET=s",
		"OAUTHRELAY_KEYSAFE_KEY=" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"M365_TENANT=contoso.com", "M365_CLIENT_ID=id", "M365_MAILBOX=app@contoso.com", "M365_SENDER_DOMAIN=contoso.com",
	}
	for _, f := range files {
		if f == "docker-compose.yaml" {
			continue // not an oauthrelay config
		}
		t.Run(f, func(t *testing.T) {
			if _, err := Load(LoadOptions{File: f, Env: env}); err != nil {
				t.Fatalf("%s does not load: %v", f, err)
			}
		})
	}
}

func TestLoad_DefaultsAndPrecedence(t *testing.T) {
	file := writeFile(t, minimal+"listen:\n  addr: 127.0.0.1:2600\n  max_sessions: 7\ndelivery:\n  connections: 2\n")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("listen", "", "")
	BindFlag(fs, "listen", "listen.addr")
	if err := fs.Parse([]string{"--listen", "127.0.0.1:2700"}); err != nil {
		t.Fatal(err)
	}
	got, err := Load(LoadOptions{File: file, Flags: fs, Env: []string{
		"OAUTHRELAY_LISTEN_ADDR=127.0.0.1:2650", // flag wins over env
		"OAUTHRELAY_DELIVERY_CONNECTIONS=1",     // env wins over file
		"OAUTHRELAY_DELIVERY_RETRY=1s,2s",       // lists are comma separated
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := got.Config
	if c.Listen.Addr != "127.0.0.1:2700" {
		t.Errorf("listen.addr = %q, want the flag's value", c.Listen.Addr)
	}
	if c.Listen.MaxSessions != 7 {
		t.Errorf("listen.max_sessions = %d, want the file's 7", c.Listen.MaxSessions)
	}
	if c.Delivery.Connections != 1 {
		t.Errorf("delivery.connections = %d, want env's 1", c.Delivery.Connections)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; len(c.Delivery.Retry) != 2 || c.Delivery.Retry[1] != want[1] {
		t.Errorf("delivery.retry = %v, want %v", c.Delivery.Retry, want)
	}
	// Defaults the issue names.
	d := Default()
	if d.Upstream.Addr != "" || d.Upstream.TLS != "starttls" ||
		d.Delivery.Connections != 3 || d.Delivery.RatePerMinute != 30 ||
		d.Delivery.MaxAge != 120*time.Hour || d.Listen.MaxMessageBytes != 35<<20 ||
		!strings.HasPrefix(d.Listen.Addr, "127.0.0.1:") || !strings.HasPrefix(d.Admin.Addr, "127.0.0.1:") {
		t.Errorf("defaults drifted: %+v", d)
	}
	a := c.Accounts[0]
	if a.Flow != FlowAuthorizationCode || a.Authority != DefaultAuthority || a.Provider != "microsoft" || a.RewriteSender != RewriteOff {
		t.Errorf("account defaults not applied: %+v", a)
	}
}

func TestLoad_ThreeMistakesAllReported(t *testing.T) {
	file := writeFile(t, `
listen:
  addr: nonsense
accounts:
  - name: helpdesk
    tenant: contoso.com
    client_id: x
    flow: password
    senders: ["*@contoso.com"]
`)
	_, err := Load(LoadOptions{File: file, Env: []string{}})
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	want := map[string]string{
		"listen.addr":         "host:port",
		"accounts[0].flow":    "authorization_code, device_code, client_credentials",
		"accounts[0].mailbox": "the mailbox address the relay signs in as",
	}
	if len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for _, p := range ps {
		if fix, ok := want[p.Key]; !ok || !strings.Contains(p.Msg, fix) {
			t.Errorf("unexpected problem %q", p)
		}
	}
}

func TestLoad_SecretsFromEnvAndFiles(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("from-file\n"), 0o600)
	file := writeFile(t, minimal+"    client_secret_file: "+secretFile+"\nadmin:\n  token: ${ADMIN_TOK}\n")
	got, err := Load(LoadOptions{File: file, Env: []string{"ADMIN_TOK=pa$$word-of-16-chars"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Admin.Token != "pa$$word-of-16-chars" {
		t.Errorf("admin.token = %q: ${VAR} not expanded, or $ inside the value touched", got.Admin.Token)
	}
	if got.Accounts[0].ClientSecret != "from-file" {
		t.Errorf("client_secret_file not read: %q", got.Accounts[0].ClientSecret)
	}
	out, err := Effective(&got.Config)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "pa$$word") || strings.Contains(string(out), "from-file") {
		t.Errorf("effective config shows a secret:\n%s", out)
	}
	if !strings.Contains(string(out), "max_age: 120h") {
		t.Errorf("durations should print as written: \n%s", out)
	}
}

func TestLoad_MissingEnvVarNamed(t *testing.T) {
	file := writeFile(t, minimal+"admin:\n  token: ${NOT_SET_ANYWHERE}\n")
	got, err := Load(LoadOptions{File: file, Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0].String(), "${NOT_SET_ANYWHERE} is not set") || got.Admin.Token != "" {
		t.Fatalf("want a warning naming the unset variable and an empty value, got %q %q", got.Warnings, got.Admin.Token)
	}
}

func TestLoad_UnknownKeySuggestsFix(t *testing.T) {
	file := writeFile(t, minimal+"    mailbx: a@b.c\nlisten:\n  adr: 1.2.3.4:25\n")
	_, err := Load(LoadOptions{File: file, Env: []string{}})
	if err == nil {
		t.Fatal("a misspelt key must not be silently ignored")
	}
	for _, want := range []string{"listen.adr: unknown key — did you mean listen.addr?", "accounts[0].mailbx: unknown key — did you mean mailbox?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestLoad_AccountsFromEnvironmentOnly(t *testing.T) {
	got, err := Load(LoadOptions{SearchPaths: []string{}, Env: []string{
		"OAUTHRELAY_ACCOUNTS_0_NAME=app",
		"OAUTHRELAY_ACCOUNTS_0_TENANT=contoso.com",
		"OAUTHRELAY_ACCOUNTS_0_CLIENT_ID=id",
		"OAUTHRELAY_ACCOUNTS_0_MAILBOX=app@contoso.com",
		"OAUTHRELAY_ACCOUNTS_0_SENDERS=*@contoso.com,alerts@fabrikam.com",
		"OAUTHRELAY_ACCOUNTS_0_FLOW=device_code",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got.File != "" || len(got.Accounts) != 1 || got.Accounts[0].Flow != FlowDeviceCode || len(got.Accounts[0].Senders) != 2 {
		t.Fatalf("env-only account not loaded: %+v", got.Accounts)
	}
}

func TestValidate_Accounts(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Accounts = []Account{{Name: "a", Tenant: "t", ClientID: "c", Mailbox: "a@b.c", Senders: []string{"*"}}}
		AccountDefaults(&c.Accounts[0])
		return c
	}
	tests := []struct {
		name   string
		change func(c *Config)
		key    string
	}{
		{"client credentials needs a secret", func(c *Config) { c.Accounts[0].Flow = FlowClientCredentials }, "accounts[0].client_secret"},
		{"duplicate name", func(c *Config) { c.Accounts = append(c.Accounts, c.Accounts[0]) }, "accounts[1].name"},
		{"bad sender pattern", func(c *Config) { c.Accounts[0].Senders = []string{"contoso.com"} }, "accounts[0].senders[0]"},
		{"plain http authority", func(c *Config) { c.Accounts[0].Authority = "http://login.example" }, "accounts[0].authority"},
		{"plaintext upstream", func(c *Config) { c.Upstream.TLS = "none" }, "upstream.tls"},
		{"bad network", func(c *Config) { c.Listen.AllowedNetworks = []string{"10.0.0.0/33"} }, "listen.allowed_networks[0]"},
		{"no accounts", func(c *Config) { c.Accounts = nil }, "accounts"},
		{"rewrite mode", func(c *Config) { c.Accounts[0].RewriteSender = "yes" }, "accounts[0].rewrite_sender"},
		{"redirect URI unknowable", func(c *Config) { c.Admin.Addr = "0.0.0.0:8025" }, "admin.public_url"},
	}
	if ps := Validate(func() *Config { c := base(); return &c }()); len(ps) != 0 {
		t.Fatalf("base config should be valid: %v", ps)
	}
	for _, tt := range tests {
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
	c.Upstream.TLS = "none"
	c.Upstream.InsecureAllowPlaintext = true
	if ps := Validate(&c); len(ps) != 0 {
		t.Errorf("plaintext with the insecure switch on should pass: %v", ps)
	}
}
