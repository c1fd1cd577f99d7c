package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
)

// certConfig writes a configuration with one app-only account signing in
// with the given certificate and key (PEM).
func certConfig(t *testing.T, certPEM, keyPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "oauthrelay.crt"), filepath.Join(dir, "oauthrelay.key")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o600)
	file := filepath.Join(dir, "oauthrelay.yaml")
	os.WriteFile(file, []byte(`
spool:
  dir: `+filepath.Join(dir, "spool")+`
keysafe:
  path: `+filepath.Join(dir, "keysafe.bin")+`
accounts:
  - name: alerts
    tenant: contoso.com
    client_id: 11111111-2222-3333-4444-555555555555
    flow: client_credentials
    mailbox: alerts@contoso.com
    senders: ["*@contoso.com"]
    client_certificate_file: `+certFile+`
    client_key_file: `+keyFile+`
`), 0o600)
	return file
}

func clientCert(t *testing.T, notAfter time.Time) *fakem365.ClientCertificate {
	t.Helper()
	cc, err := fakem365.NewClientCertificate("oauthrelay", notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

func TestCheckConfig_ClientCertificate(t *testing.T) {
	soon := clientCert(t, time.Now().Add(12*24*time.Hour+time.Hour))
	other := clientCert(t, time.Now().Add(365*24*time.Hour))
	expired := clientCert(t, time.Now().Add(-48*time.Hour))
	for _, tc := range []struct {
		name          string
		cert, key     []byte
		exit2         bool
		want, wantNot []string
	}{
		{"expires in 12 days: OK with a warning", soon.CertPEM, soon.KeyPEM, false,
			[]string{"# configuration OK", "warning: accounts[0].client_certificate_file (alerts): the client certificate expires on", "(in 12 days)", "Certificates & secrets",
				"#   with     certificate ", "oauthrelay.crt (expires " + soon.Cert.NotAfter.UTC().Format("2006-01-02") + ")"}, nil},
		{"a year left: no warning", other.CertPEM, other.KeyPEM, false, []string{"# configuration OK"}, []string{"warning:"}},
		{"key of another certificate", soon.CertPEM, other.KeyPEM, true,
			[]string{"accounts[0].client_key_file:", "does not belong to the certificate", "-keyout"}, nil},
		{"expired", expired.CertPEM, expired.KeyPEM, true,
			[]string{"accounts[0].client_certificate_file:", "expired on " + expired.Cert.NotAfter.UTC().Format("2006-01-02"), "openssl req -x509"}, nil},
		{"the certificate in the key's place", soon.CertPEM, soon.CertPEM, true,
			[]string{"accounts[0].client_key_file:", "no PEM private key"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, "check-config", "--config", certConfig(t, tc.cert, tc.key))
			var exit exitError
			if tc.exit2 != (errors.As(err, &exit) && exit.code == 2) {
				t.Fatalf("exit: %v\n%s", err, out)
			}
			if err != nil {
				out += err.Error()
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// check-config reads a Google service account's key file as a token
// request would, and refuses what the request could not use.
func TestCheckConfig_ServiceAccountFile(t *testing.T) {
	good := clientCert(t, time.Now().Add(365*24*time.Hour))
	keyJSON := func(key string) string {
		return `{"type":"service_account","client_email":"relay@p.iam.gserviceaccount.com","private_key_id":"1","private_key":` + key + `}`
	}
	quote := func(b []byte) string {
		return `"` + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", `\n`) + `"`
	}
	for _, tc := range []struct {
		name, file string
		exit2      bool
		want       string
	}{
		{"a good key", keyJSON(quote(good.KeyPEM)), false, "configuration OK"},
		{"line breaks typed as \\n", keyJSON(`"` + strings.ReplaceAll(strings.TrimSpace(string(good.KeyPEM)), "\n", `\\n`) + `"`), false, "configuration OK"},
		{"not JSON", "hello", true, "is not a JSON key file"},
		{"an OAuth client's file", `{"type":"authorized_user","client_id":"x","client_secret":"y"}`, true, "lacks client_email, private_key"},
		{"no private key", `{"type":"service_account","client_email":"a@b"}`, true, "lacks private_key"},
		{"a certificate for a key", keyJSON(quote(good.CertPEM)), true, "of type CERTIFICATE"},
		{"no PEM", keyJSON(`"NOT A PEM"`), true, "not a PEM key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sa := filepath.Join(dir, "sa.json")
			os.WriteFile(sa, []byte(tc.file), 0o600)
			file := filepath.Join(dir, "oauthrelay.yaml")
			os.WriteFile(file, []byte(`
spool:
  dir: `+filepath.Join(dir, "spool")+`
keysafe:
  path: `+filepath.Join(dir, "keysafe.bin")+`
accounts:
  - name: alerts
    provider: google
    flow: service_account
    service_account_file: `+sa+`
    mailbox: alerts@example.com
    senders: ["*@example.com"]
`), 0o600)
			out, err := run(t, "check-config", "--config", file)
			var ee exitError
			if tc.exit2 != (errors.As(err, &ee) && ee.code == 2) {
				t.Fatalf("exit %v, want exit 2: %v; %v\n%s", err, tc.exit2, err, out)
			}
			got := out
			if err != nil {
				got += err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("want %q in:\n%s", tc.want, got)
			}
		})
	}
}

// check-config reads the users files as serve does at start: the line
// `htpasswd -nbB … | sed 's/$/:acct/'` makes of htpasswd's trailing blank
// line is refused here, not first by serve.
func TestCheckConfig_UsersFiles(t *testing.T) {
	dir := t.TempDir()
	hash := "$2y$05$0123456789012345678901u3mGSV1bSnB9LB6Wc2I4.q5kXeQx1Wq"
	users := filepath.Join(dir, "inbound-users")
	os.WriteFile(users, []byte("reader:"+hash+":alerts\n:alerts\n"), 0o600)
	file := filepath.Join(dir, "oauthrelay.yaml")
	os.WriteFile(file, []byte(`
spool:
  dir: `+filepath.Join(dir, "spool")+`
keysafe:
  path: `+filepath.Join(dir, "keysafe.bin")+`
inbound:
  users_file: `+users+`
  imap:
    addr: 127.0.0.1:1143
accounts:
  - name: alerts
    tenant: contoso.com
    client_id: 1111
    mailbox: alerts@contoso.com
    senders: ["*@contoso.com"]
    protocols: [smtp, imap]
`), 0o600)
	_, err := run(t, "check-config", "--config", file)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "inbound.users_file") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("check-config: %v", err)
	}
	os.WriteFile(users, []byte("reader:"+hash+":alerts\n"), 0o600)
	if out, err := run(t, "check-config", "--config", file); err != nil {
		t.Fatalf("a good users file: %v\n%s", err, out)
	}
}

// check-config refuses the files serve would refuse at start: a missing
// upstream.ca_file, one with no certificate, a listen.tls pair that is not.
func TestCheckConfig_StartFiles(t *testing.T) {
	cc := clientCert(t, time.Now().Add(time.Hour))
	other := clientCert(t, time.Now().Add(time.Hour))
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	ca, notPEM := write("ca.pem", cc.CertPEM), write("junk.pem", []byte("hello"))
	crt, key, otherKey := write("tls.crt", cc.CertPEM), write("tls.key", cc.KeyPEM), write("other.key", other.KeyPEM)
	for _, tc := range []struct{ name, yaml, key string }{
		{"a good CA and pair", "upstream:\n  ca_file: " + ca + "\nlisten:\n  tls:\n    cert_file: " + crt + "\n    key_file: " + key + "\n", ""},
		{"a missing CA file", "upstream:\n  ca_file: /nonexistent/ca.pem\n", "upstream.ca_file"},
		{"a CA file with no certificate", "upstream:\n  ca_file: " + notPEM + "\n", "upstream.ca_file"},
		{"a missing TLS certificate", "listen:\n  tls:\n    cert_file: /nonexistent/tls.crt\n    key_file: " + key + "\n", "listen.tls.cert_file"},
		{"a key of another certificate", "listen:\n  tls:\n    cert_file: " + crt + "\n    key_file: " + otherKey + "\n", "listen.tls.cert_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := write("c.yaml", []byte(tc.yaml+"spool:\n  dir: "+filepath.Join(dir, "spool")+"\nkeysafe:\n  path: "+filepath.Join(dir, "ks.bin")+
				"\naccounts:\n  - name: a\n    tenant: t.test\n    client_id: c\n    mailbox: a@t.test\n    senders: [\"*@t.test\"]\n"))
			_, err := run(t, "check-config", "--config", file)
			switch {
			case tc.key == "" && err != nil:
				t.Fatalf("check-config: %v", err)
			case tc.key != "" && (err == nil || !strings.Contains(err.Error(), tc.key)):
				t.Fatalf("check-config: %v, want a problem naming %s", err, tc.key)
			}
		})
	}
}
