package tokens_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// Microsoft refusing one protocol's login stops that protocol's logins
// only: the account's state (and so its mail) is untouched, SMTP's refusal
// does not stop IMAP or POP3, and Try again clears it.
func TestManager_ProtocolRefusalIsThatProtocolsOnly(t *testing.T) {
	e := newEnv(t, tokens.FlowDeviceCode)
	m := e.manager(t, nil)
	e.connect(t, m)
	ctx := context.Background()
	if _, err := m.AuthFor(ctx, "helpdesk", "imap"); err != nil {
		t.Fatal(err)
	}
	ex := m.AuthRefused("helpdesk", "imap", "NO AUTHENTICATE failed.")
	if !strings.Contains(ex.Action, "-ImapEnabled $true") || ex.Code != "NO AUTHENTICATE failed." {
		t.Errorf("explanation %+v", ex)
	}
	var ae *tokens.AccountError
	if _, err := m.AuthFor(ctx, "helpdesk", "imap"); !errors.As(err, &ae) || ae.Explanation != ex {
		t.Errorf("IMAP after its refusal: %v", err)
	}
	if _, err := m.AuthFor(ctx, "helpdesk", "pop3"); err != nil {
		t.Errorf("POP3 stopped by IMAP's refusal: %v", err)
	}
	if _, err := m.AuthFor(ctx, "helpdesk", "smtp"); err != nil {
		t.Errorf("SMTP stopped by IMAP's refusal: %v", err)
	}
	if st := m.State("helpdesk"); st.State != tokens.Connected {
		t.Errorf("state %s after an IMAP refusal; the account's mail must not pause", st.State)
	} else if st.Refused["imap"] != ex || len(st.Protocols) == 0 {
		t.Errorf("AccountState (for the page, the API, `accounts`) lacks the refusal or the protocols: %+v", st)
	}
	if r := m.Refused("helpdesk"); len(r) != 1 || r["imap"] != ex {
		t.Errorf("Refused = %v", r)
	}

	m.SMTPAuthRefused("helpdesk", 535, "5.7.139")
	if _, err := m.AuthFor(ctx, "helpdesk", "smtp"); !errors.As(err, &ae) {
		t.Errorf("SMTP after 5.7.139: %v", err)
	}
	if _, err := m.AuthFor(ctx, "helpdesk", "pop3"); err != nil {
		t.Errorf("POP3 stopped by SMTP AUTH being disabled: %v", err)
	}

	if _, err := m.Retry(ctx, "helpdesk"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AuthFor(ctx, "helpdesk", "imap"); err != nil {
		t.Errorf("IMAP after Try again: %v", err)
	}
	if r := m.Refused("helpdesk"); r != nil {
		t.Errorf("Refused after Try again = %v", r)
	}
	if r := m.State("helpdesk").Refused; r != nil {
		t.Errorf("AccountState.Refused after Try again = %v", r)
	}
}
