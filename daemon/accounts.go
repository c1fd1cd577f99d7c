package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// accounts is what the admin server sees of the accounts: the token
// manager, with Try again checked against Microsoft's SMTP login first when
// it was that login Microsoft refused.
type accounts struct {
	*tokens.Manager
	up *relay.Upstream
}

// Retry releases an account's mail only if it would now get through: for
// an account Microsoft refused at the login (smtp_auth_disabled,
// smtp_auth_refused), a login with a fresh token is tried first, and if
// Microsoft still refuses, the account stays as it is and the error says
// why.
func (a accounts) Retry(ctx context.Context, name string) (tokens.AccountState, error) {
	st := a.Manager.State(name)
	if st.State == tokens.SMTPAuthDisabled || st.State == tokens.SMTPAuthRefused {
		if err := a.up.TryLogin(ctx, name); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code == 535 {
				ex := a.Manager.SMTPAuthRefused(name, se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]))
				return a.Manager.State(name), fmt.Errorf("the login is still refused by Microsoft (%s): %s", ex.Code, ex.Title)
			}
			return st, fmt.Errorf("could not try the login: %w", err)
		}
	}
	return a.Manager.Retry(ctx, name)
}
