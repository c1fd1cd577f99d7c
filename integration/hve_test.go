package integration

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
)

// A High Volume Email account signs in app-only (its flow defaults to
// client_credentials) and is not held to the mailbox pacing: ten messages
// go out at once while delivery.rate_per_minute would space them 2 s
// apart — a mailbox account beside it is still paced.
func TestHVE_AppOnlyAndNotPaced(t *testing.T) {
	t.Parallel()
	const bulk = "bulk@contoso.test"
	h := newHarness(t, func(c *configs.Config) {
		c.Delivery.RatePerMinute = 30
		c.Accounts[0].Senders = []string{"helpdesk@contoso.test"}
		hve := configs.Account{Name: "bulk", Kind: configs.KindHVE, Tenant: "contoso.test", ClientID: "hve-app",
			ClientSecret: "hve-secret", Mailbox: bulk, Senders: []string{"*@contoso.test"}, Authority: c.Accounts[0].Authority}
		configs.AccountDefaults(&hve)
		c.Accounts = append(c.Accounts, hve)
	}, daemon.Hooks{})
	h.fake.Entra.RegisterClient("hve-app", "hve-secret")
	if got := h.cfg.Accounts[1].Flow; got != configs.FlowClientCredentials {
		t.Fatalf("HVE flow %s", got)
	}
	start := time.Now()
	for i := range 10 {
		if _, err := send(h.relay.SMTPAddr(), bulk, []string{"all-staff@contoso.test"}, message(i, bulk, "all-staff@contoso.test", ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.fake.SMTP.WaitMessages(10, 10*time.Second); len(got) != 10 {
		t.Fatalf("upstream got %d of 10", len(got))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("10 HVE messages took %v: paced like a mailbox (30/min would take 18 s)", d)
	}
	if st := h.relay.Tokens.State("bulk"); st.Kind != "hve" {
		t.Errorf("the HVE account's status says kind %q", st.Kind)
	}
	for _, m := range h.fake.SMTP.Messages() {
		if m.Mailbox != bulk {
			t.Errorf("sent as %s, want the HVE account %s", m.Mailbox, bulk)
		}
	}
}
