package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// certHarness is a relay whose account signs in app-only with a client
// certificate (client_certificate_file, client_key_file) expiring at
// notAfter; the certificate is not yet registered on the fake Entra ID.
func certHarness(t *testing.T, notAfter time.Time, hookURL string, mods ...func(*configs.Config)) (*harness, *fakem365.ClientCertificate) {
	t.Helper()
	cc, err := fakem365.NewClientCertificate("oauthrelay", notAfter)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "oauthrelay.crt"), filepath.Join(dir, "oauthrelay.key")
	os.WriteFile(certFile, cc.CertPEM, 0o644)
	os.WriteFile(keyFile, cc.KeyPEM, 0o600)
	h := newHarness(t, func(c *configs.Config) {
		a := &c.Accounts[0]
		a.Flow, a.ClientID = configs.FlowClientCredentials, "app-cert"
		a.ClientCertificateFile, a.ClientKeyFile = certFile, keyFile
		c.Delivery.Retry = []time.Duration{time.Hour} // only a resume can deliver in time
		c.Alert.WebhookURL = hookURL
		for _, mod := range mods {
			mod(c)
		}
	}, daemon.Hooks{})
	t.Cleanup(func() {
		// The private key never reaches the log, in any form.
		body := strings.Join(strings.Split(string(cc.KeyPEM), "\n")[1:3], "")
		if strings.Contains(h.logs.String(), body[:40]) {
			t.Error("the private key reached the relay's log")
		}
	})
	return h, cc
}

// An app-only account with a certificate delivers through the relay: the
// token request carries a client assertion the fake Entra ID verifies, and
// every view shows the credential and, 20 days before it expires, warns.
func TestCert_AppOnlyAccountDeliversAndWarnsBeforeExpiry(t *testing.T) {
	t.Parallel()
	hookURL, alerts := alertHook(t)
	notAfter := time.Now().Add(20 * 24 * time.Hour).Truncate(time.Second)
	h, cc := certHarness(t, notAfter, hookURL)
	h.fake.Entra.RegisterCertificate("app-cert", cc.Cert)

	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	if got := byTestID(h.fake.SMTP.WaitMessages(1, 10*time.Second)); got["1"].Data == nil {
		t.Fatal("message not delivered")
	}
	if n := h.fake.Entra.Requests(fakem365.GrantClientCredentials); n != 1 {
		t.Errorf("%d client credentials requests, want 1", n)
	}
	st := h.relay.Tokens.State("helpdesk")
	if st.State != tokens.Connected || st.Credential != "certificate" || !st.CertificateExpiry.Equal(notAfter) ||
		!strings.Contains(st.CertificateWarning, "expires on "+notAfter.UTC().Format("2006-01-02")) {
		t.Errorf("state %+v", st)
	}

	day := notAfter.UTC().Format("2006-01-02")
	tok := h.relay.AdminToken
	if _, body := api(t, h, "GET", "/api/accounts", tok); !strings.Contains(body, `"credential": "certificate"`) || !strings.Contains(body, `"certificate_warning": "the client certificate expires on `+day) {
		t.Errorf("/api/accounts: %s", body)
	}
	if _, body := api(t, h, "GET", "/metrics", tok); !strings.Contains(body, `oauthrelay_client_certificate_expiry_timestamp_seconds{account="helpdesk"}`) {
		t.Error("no certificate expiry gauge in /metrics")
	}
	resp, err := h.browser().Get("http://" + h.relay.AdminAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"microsoft · global cloud · certificate (expires " + day + ")", `id="certificate-helpdesk"`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	// The webhook heard at start, once.
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case a := <-alerts:
			if a["event"] == "certificate_expires_soon" {
				got = true
				if a["account"] != "helpdesk" || !strings.HasPrefix(a["certificate_expiry"].(string), day) {
					t.Errorf("alert %v", a)
				}
			}
		case <-deadline:
			t.Fatal("no certificate_expires_soon alert at start")
		}
	}
}

// A certificate that is not uploaded to the app registration: Entra ID
// answers AADSTS700027, the account shows misconfigured with what to do,
// its mail waits, and after the upload Try again delivers it.
func TestCert_UnregisteredCertificateShowsMisconfigured(t *testing.T) {
	t.Parallel()
	h, cc := certHarness(t, time.Now().Add(365*24*time.Hour), "")
	reply, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "message paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })
	st := h.relay.Tokens.State("helpdesk")
	if st.State != tokens.Misconfigured || st.Explanation.Code != "AADSTS700027" ||
		!strings.Contains(st.Explanation.Action, "upload the certificate") || !strings.Contains(st.Explanation.Action, "Certificates & secrets") {
		t.Fatalf("state %s, %q: want misconfigured, AADSTS700027, upload the certificate", st.State, st.Explanation)
	}
	resp, err := h.browser().Get("http://" + h.relay.AdminAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`data-state="misconfigured"`, "<code>AADSTS700027</code>", "upload the certificate", `id="retry-helpdesk"`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if len(h.fake.SMTP.Messages()) != 0 {
		t.Fatal("delivered without a token")
	}

	h.fake.Entra.RegisterCertificate("app-cert", cc.Cert)
	if code, body := api(t, h, "POST", "/api/accounts/helpdesk/retry", h.relay.AdminToken); code != http.StatusOK {
		t.Fatalf("try again: %d %s", code, body)
	}
	if got := byTestID(h.fake.SMTP.WaitMessages(1, 10*time.Second)); got["1"].Data == nil {
		t.Fatal("mail not released after the certificate was uploaded")
	}
}

// A certificate account in GCC High asks for its cloud's app-only scope
// (https://outlook.office365.us/.default) and its mail flows.
func TestCert_USGovAccountAsksForItsCloudsScope(t *testing.T) {
	t.Parallel()
	h, cc := certHarness(t, time.Now().Add(365*24*time.Hour), "", func(c *configs.Config) { c.Accounts[0].Cloud = configs.CloudUSGov })
	h.fake.Entra.SetCloud("https://outlook.office365.us")
	h.fake.Entra.RegisterCertificate("app-cert", cc.Cert)
	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	if got := h.fake.SMTP.WaitMessages(1, 10*time.Second); len(got) != 1 {
		t.Fatalf("upstream got %d messages; account %+v", len(got), h.relay.Tokens.State("helpdesk"))
	}
	if st := h.relay.Tokens.State("helpdesk"); st.Cloud != "usgov" || st.Credential != "certificate" {
		t.Errorf("state %+v", st)
	}
}
