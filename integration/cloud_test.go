package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// An account in GCC High (cloud: usgov) asks the US Government cloud's
// Entra ID for scopes under https://outlook.office365.us, and its mail
// flows; the fake, set up as that cloud, refuses the global resource.
func TestCloud_USGovAccountSignsInWithItsCloudsScopes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Accounts[0].Cloud = configs.CloudUSGov
		c.Accounts[0].Flow = configs.FlowDeviceCode
	}, daemon.Hooks{})
	h.fake.Entra.SetCloud("https://outlook.office365.us")
	if _, err := h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(dc tokens.DeviceCode) {
		h.fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := send(h.relay.SMTPAddr(), mailbox, []string{"bob@example.com"}, message(1, mailbox, "bob@example.com", ""), nil); err != nil {
		t.Fatal(err)
	}
	if got := h.fake.SMTP.WaitMessages(1, 10*time.Second); len(got) != 1 {
		t.Fatalf("upstream got %d messages", len(got))
	}
}

// A global-cloud account (the default) pointed at a GCC High tenant is
// refused with AADSTS500011, and the account says which key to fix.
func TestCloud_WrongCloudIsExplained(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *configs.Config) {
		c.Accounts[0].Flow = configs.FlowDeviceCode
	}, daemon.Hooks{})
	h.fake.Entra.SetCloud("https://outlook.office365.us")
	_, err := h.relay.Tokens.ConnectDevice(t.Context(), "helpdesk", func(dc tokens.DeviceCode) {
		h.fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	})
	if err == nil {
		t.Fatal("a global-cloud sign-in in a US Government tenant succeeded")
	}
	st := h.relay.Tokens.State("helpdesk")
	if st.State != tokens.Misconfigured || !strings.Contains(st.Explanation.String(), "AADSTS500011") || !strings.Contains(st.Explanation.String(), "cloud") {
		t.Errorf("state %s: %s; want misconfigured, AADSTS500011, naming accounts[].cloud", st.State, st.Explanation.String())
	}
}
