package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakegoogle"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

const (
	gmailbox      = "alerts@example.test"
	googleClient  = "1234-fake.apps.googleusercontent.com"
	googleSecret  = "GOCSPX-fake-secret"
	googleSAEmail = "relay@fake-project.iam.gserviceaccount.com"
)

// googleHarness is a relay whose one account (named helpdesk, so
// h.connect works) is a Google account signing in at a fake Google and
// sending through its fake smtp.gmail.com.
func googleHarness(t *testing.T, flow string, mod func(*configs.Config, *fakegoogle.Google)) (*harness, *fakegoogle.Google) {
	t.Helper()
	g, err := fakegoogle.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	g.OAuth.AddUser(gmailbox)
	h := newHarness(t, func(c *configs.Config) {
		ca := filepath.Join(t.TempDir(), "google-ca.pem")
		if err := g.WriteCA(ca); err != nil {
			t.Fatal(err)
		}
		c.Upstream.Addr, c.Upstream.CAFile = "", ca // the account's own server
		a := configs.Account{Name: "helpdesk", Provider: configs.ProviderGoogle, Flow: flow,
			ClientID: googleClient, ClientSecret: googleSecret, Mailbox: gmailbox,
			Senders: []string{"*@example.test"}, Authority: g.OAuthURL, Upstream: g.SMTPAddr}
		if flow == configs.FlowServiceAccount {
			a.ClientID, a.ClientSecret = "", ""
		}
		configs.AccountDefaults(&a)
		c.Accounts = []configs.Account{a}
		if mod != nil {
			mod(c, g)
		}
	}, daemon.Hooks{})
	return h, g
}

// connectGoogle registers the relay's OAuth client at the fake Google and
// connects the account through the Connect page, signed in as gmailbox.
func connectGoogle(h *harness, g *fakegoogle.Google) {
	h.t.Helper()
	g.OAuth.RegisterClient(googleClient, googleSecret, "http://"+h.relay.AdminAddr()+"/oauth/callback")
	g.OAuth.SignInAs(gmailbox)
	h.connect()
}

// A Gmail account connected through the Connect page (authorization code,
// PKCE, the client secret Google requires, access_type=offline) sends
// through smtp.gmail.com as itself.
func TestGoogle_ConnectPageThenMailFlows(t *testing.T) {
	t.Parallel()
	h, g := googleHarness(t, configs.FlowAuthorizationCode, nil)
	connectGoogle(h, g)
	if _, err := send(h.relay.SMTPAddr(), gmailbox, []string{"bob@example.com"}, message(1, gmailbox, "bob@example.com", "via Gmail\r\n"), nil); err != nil {
		t.Fatal(err)
	}
	got := g.SMTP.WaitMessages(1, 10*time.Second)
	if len(got) != 1 || got[0].Mailbox != gmailbox || !strings.Contains(string(got[0].Data), "via Gmail") {
		t.Fatalf("Gmail got %+v", got)
	}
	// A refresh works too: the Connect gave a refresh token.
	h.relay.Tokens.Invalidate("helpdesk")
	if _, err := h.relay.Tokens.Token(t.Context(), "helpdesk"); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if n := g.OAuth.Requests("refresh_token"); n != 1 {
		t.Errorf("%d refresh requests, want 1", n)
	}
}

// A revoked Google grant: Gmail's 535 after its JSON challenge, one fresh
// token that Google refuses (invalid_grant) — the account needs a new
// sign-in, the mail waits (not bounced), and a new Connect releases it.
func TestGoogle_RevokedGrantPausesUntilReconnect(t *testing.T) {
	t.Parallel()
	h, g := googleHarness(t, configs.FlowAuthorizationCode, func(c *configs.Config, _ *fakegoogle.Google) {
		c.Delivery.Retry = []time.Duration{time.Hour}
	})
	connectGoogle(h, g)
	g.OAuth.RevokeAll()
	reply, err := send(h.relay.SMTPAddr(), gmailbox, []string{"bob@example.com"}, message(1, gmailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "account paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })
	st := h.relay.Tokens.State("helpdesk")
	if st.State != tokens.NeedsReconnect || !strings.Contains(st.Explanation.String(), "Google sign-in expired or was revoked") {
		t.Errorf("state %s: %s\n%s", st.State, st.Explanation.String(), h.logs.String())
	}
	if n := len(g.SMTP.Messages()); n != 0 {
		t.Fatalf("Gmail holds %d messages", n)
	}
	h.connect()
	if got := g.SMTP.WaitMessages(1, 10*time.Second); len(got) != 1 {
		t.Fatalf("after Connect, Gmail got %d messages", len(got))
	}
}

// Gmail's daily sending limit (550 5.4.5 after the data) is not a bounce:
// the message waits and goes when Gmail takes it again.
func TestGoogle_DailyLimitDefersNeverBounces(t *testing.T) {
	t.Parallel()
	h, g := googleHarness(t, configs.FlowAuthorizationCode, nil)
	connectGoogle(h, g)
	g.SMTP.FailNext(fakegoogle.StageData, fakegoogle.ReplyDailyLimit)
	if _, err := send(h.relay.SMTPAddr(), gmailbox, []string{"bob@example.com"}, message(1, gmailbox, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	got := g.SMTP.WaitMessages(1, 15*time.Second)
	if len(got) != 1 || got[0].To[0] != "bob@example.com" {
		t.Fatalf("Gmail got %+v: the message should be delivered on a later attempt, and no bounce sent", got)
	}
}

// A Workspace service account with domain-wide delegation signs in as the
// mailbox (JWT bearer grant, sub = mailbox) with no Connect; without the
// delegation the account says what the Workspace admin must grant.
func TestGoogle_ServiceAccount(t *testing.T) {
	t.Parallel()
	for _, delegated := range []bool{true, false} {
		var sa *fakegoogle.ServiceAccount
		h, g := googleHarness(t, configs.FlowServiceAccount, func(c *configs.Config, g *fakegoogle.Google) {
			var err error
			if sa, err = g.OAuth.NewServiceAccount(googleSAEmail); err != nil {
				t.Fatal(err)
			}
			keyFile := filepath.Join(t.TempDir(), "sa.json")
			if err := os.WriteFile(keyFile, sa.JSON, 0o600); err != nil {
				t.Fatal(err)
			}
			c.Accounts[0].ServiceAccountFile = keyFile
		})
		if delegated {
			g.OAuth.GrantDelegation(sa.ClientID, tokens.GoogleScope)
		}
		reply, err := send(h.relay.SMTPAddr(), gmailbox, []string{"bob@example.com"}, message(1, gmailbox, "bob@example.com", ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		if delegated {
			if got := g.SMTP.WaitMessages(1, 10*time.Second); len(got) != 1 || got[0].Mailbox != gmailbox {
				t.Fatalf("Gmail got %+v", got)
			}
			continue
		}
		id := queueID(t, reply)
		waitFor(t, "account paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })
		st := h.relay.Tokens.State("helpdesk")
		if st.State != tokens.Misconfigured || !strings.Contains(st.Explanation.String(), "Domain Wide Delegation") {
			t.Errorf("without delegation: %s: %s", st.State, st.Explanation.String())
		}
	}
}

// A recipient Gmail does not know (550 5.1.1 at RCPT) bounces to the
// sender, and the bounce says it was Gmail that answered and what it means.
func TestGoogle_BounceNamesGmail(t *testing.T) {
	t.Parallel()
	h, g := googleHarness(t, configs.FlowAuthorizationCode, nil)
	connectGoogle(h, g)
	g.SMTP.FailNext(fakegoogle.StageRcpt, fakegoogle.ReplyNoSuchUser)
	if _, err := send(h.relay.SMTPAddr(), gmailbox, []string{"nobody@example.com"}, message(1, gmailbox, "nobody@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	got := g.SMTP.WaitMessages(1, 10*time.Second)
	if len(got) != 1 || got[0].To[0] != gmailbox {
		t.Fatalf("Gmail got %+v, want the bounce to the sender", got)
	}
	dsn := string(got[0].Data)
	for _, want := range []string{"sending mail through Gmail as " + gmailbox, "Gmail answered: 550 5.1.1", "Gmail does not accept this recipient address", "Remote-MTA: dns; 127.0.0.1"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn)
		}
	}
}

// A service account key file that cannot be used (its private_key not a
// PEM RSA key, a FIFO, …) is the account's configuration, not an outage:
// check-config refuses it, the account is misconfigured, mail waits
// without using attempts, and a fixed file releases it without a restart.
func TestGoogle_BadServiceAccountKeyIsMisconfiguredUntilFixed(t *testing.T) {
	t.Parallel()
	var sa *fakegoogle.ServiceAccount
	var keyFile string
	h, g := googleHarness(t, configs.FlowServiceAccount, func(c *configs.Config, g *fakegoogle.Google) {
		var err error
		if sa, err = g.OAuth.NewServiceAccount(googleSAEmail); err != nil {
			t.Fatal(err)
		}
		keyFile = filepath.Join(t.TempDir(), "sa.json")
		bad := strings.Replace(string(sa.JSON), "-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----", 1)
		os.WriteFile(keyFile, []byte(bad), 0o600)
		c.Accounts[0].ServiceAccountFile = keyFile
	})
	g.OAuth.GrantDelegation(sa.ClientID, tokens.GoogleScope)
	st := h.relay.Tokens.State("helpdesk")
	if st.State != tokens.Misconfigured || !strings.Contains(st.Explanation.String(), "service_account_file") || !strings.Contains(st.Explanation.String(), keyFile) {
		t.Fatalf("at start: %s: %s", st.State, st.Explanation.String())
	}
	reply, err := send(h.relay.SMTPAddr(), gmailbox, []string{"bob@example.com"}, message(1, gmailbox, "bob@example.com", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	waitFor(t, "account paused", 10*time.Second, func() bool { return messageState(h.relay, id) == queue.MsgPaused })
	if m, _ := h.relay.Queue.Get(id); m.Attempts != 0 {
		t.Errorf("a paused message used %d attempts", m.Attempts)
	}
	if g.OAuth.Requests(fakegoogle.GrantJWTBearer) != 0 {
		t.Error("a token request was sent with a key that cannot be used")
	}
	os.WriteFile(keyFile, sa.JSON, 0o600) // fixed: the right key
	if got := g.SMTP.WaitMessages(1, 15*time.Second); len(got) != 1 {
		t.Fatalf("after the fix, Gmail got %d messages", len(got))
	}
}

// Google has no device flow for Gmail: asking for one says so and what to
// do instead, and nothing is sent to Google.
func TestGoogle_DeviceSignInRefusedWithTheReason(t *testing.T) {
	t.Parallel()
	h, g := googleHarness(t, configs.FlowAuthorizationCode, nil)
	_, err := h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(tokens.DeviceCode) {})
	if err == nil || !strings.Contains(err.Error(), "device flow does not allow the Gmail scope") || !strings.Contains(err.Error(), "Connect page") {
		t.Errorf("ConnectDevice: %v", err)
	}
	if n := g.OAuth.Requests(fakegoogle.GrantDeviceCode); n != 0 {
		t.Errorf("%d device-code requests reached Google", n)
	}
	if st := h.relay.Tokens.State("helpdesk"); !strings.Contains(st.Explanation.Title, "not connected to Google") {
		t.Errorf("a new Google account says %q", st.Explanation.Title)
	}
}
