package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/relay/admin"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// The check's result is the admin API's and page's format.
type (
	CheckStep   = admin.CheckStep
	CheckResult = admin.CheckResult
)

// Check tries an account end to end without sending anything: it gets a
// token, reads the permissions in it, connects to the upstream, signs in
// with XOAUTH2 and QUITs. It changes no state: the account's mail is
// neither paused nor resumed by it (Retry does that). signedInAs is who
// connected the account, for explaining a 535 5.7.3.
func (d *Upstream) Check(ctx context.Context, account, signedInAs string) CheckResult {
	u, ok := d.accounts[account]
	res := CheckResult{Account: account}
	if !ok {
		res.Steps = append(res.Steps, CheckStep{Step: "account", Detail: "no account named " + account + " in the configuration", Fix: "use a name from `oauthrelay accounts`"})
		return res
	}
	res.Mailbox = u.Mailbox
	add := func(s CheckStep) bool {
		res.Steps = append(res.Steps, s)
		return s.OK
	}
	done := func() CheckResult {
		res.OK = !slices.ContainsFunc(res.Steps, func(s CheckStep) bool { return !s.OK })
		return res
	}

	// A real token request, not the cached token: a check after changing
	// a secret or a certificate must try it.
	d.tokens.Invalidate(account)
	g, err := d.tokens.Grants(ctx, account)
	if err != nil {
		s := CheckStep{Step: "token", Detail: "could not get an access token: " + err.Error()}
		var ae *tokens.AccountError
		if errors.As(err, &ae) {
			s.Detail = "the sign-in service refused a token: " + ae.Explanation.Title
			s.Fix = ae.Explanation.Action
			if ae.Explanation.URL != "" {
				s.Fix += " (" + ae.Explanation.URL + ")"
			}
		} else {
			s.Fix = "the token endpoint could not be reached: check DNS, the firewall (outbound HTTPS to the account's sign-in service: `oauthrelay check-config` prints it) and any proxy (HTTPS_PROXY)"
		}
		add(s)
		return done()
	}
	add(CheckStep{Step: "token", OK: true, Detail: "got an access token (" + g.Fingerprint + ", expires " + g.Expiry.UTC().Format("2006-01-02 15:04 MST") + ")"})
	add(permissions(g, u.Mailbox))

	if err := d.acquire(ctx, u); err != nil {
		add(CheckStep{Step: "connect", Detail: "interrupted while waiting for a free upstream session: " + err.Error()})
		return done()
	}
	defer func() { <-u.sessions }()
	c, _, aerr := d.open(ctx, d.addr(u))
	if aerr != nil {
		add(CheckStep{Step: "connect", Detail: fmt.Sprintf("cannot open an SMTP session with %s: %s", d.addr(u), aerr.reply), Fix: connectFix(aerr)})
		return done()
	}
	tlsNote := "without TLS (upstream.insecure_allow_plaintext: tests only)"
	if st, ok := c.TLSConnectionState(); ok {
		host, _, _ := strings.Cut(d.addr(u), ":")
		if h, _, err := net.SplitHostPort(d.addr(u)); err == nil {
			host = h
		}
		tlsNote = "TLS " + tlsVersion(st.Version) + ", certificate for " + host + " trusted"
	}
	add(CheckStep{Step: "connect", OK: true, Detail: "connected to " + d.addr(u) + " (" + tlsNote + ")"})

	cred, err := d.tokens.Credential(ctx, account)
	if err == nil {
		err = c.Auth(cred.SASL)
	}
	if err != nil {
		c.Close()
		s := CheckStep{Step: "login", Detail: "signing in as " + u.Mailbox + " failed: " + err.Error()}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 535 {
			ex := tokens.ExplainSMTPAuth(se.Code, enhanced(se), tokens.Account{Name: account, Mailbox: u.Mailbox}, signedInAs)
			s.Detail = fmt.Sprintf("%s refused the login (%d %s): %s", u.service(), se.Code, enhanced(se), ex.Title)
			s.Fix = ex.Action
		} else {
			s.Fix = "the connection failed during the login; try again, and check the network if it persists"
		}
		add(s)
		return done()
	}
	c.Quit()
	add(CheckStep{Step: "login", OK: true, Detail: u.service() + " accepted the XOAUTH2 login for " + u.Mailbox + " (nothing was sent)"})
	return done()
}

// permissions says what the token allows and whether that is enough.
func permissions(g tokens.Grants, mailbox string) CheckStep {
	s := CheckStep{Step: "permissions", OK: true}
	switch {
	case g.Opaque:
		s.Detail = "the access token is opaque (not a JWT), so its permissions cannot be read here; the login step shows whether it works"
		return s
	case len(g.Roles) > 0:
		s.Detail = "app permissions (roles): " + strings.Join(g.Roles, ", ")
		if !slices.Contains(g.Roles, "SMTP.SendAsApp") {
			s.OK = false
			s.Fix = "add the Office 365 Exchange Online application permission SMTP.SendAsApp to the app registration and grant admin consent"
		}
	case len(g.Scopes) > 0:
		s.Detail = "delegated permissions (scp): " + strings.Join(g.Scopes, " ")
		if !slices.Contains(g.Scopes, "SMTP.Send") {
			s.OK = false
			s.Fix = "add the delegated permission Office 365 Exchange Online → SMTP.Send to the app registration, grant consent, and connect again"
		}
	default:
		s.Detail = "the access token names no permissions (no scp or roles claim)"
	}
	if w := tokens.WrongUser(g.User, mailbox); w != "" {
		s.Detail += "; " + w
	}
	return s
}

func connectFix(aerr *attemptError) string {
	t := aerr.reply.Text
	switch {
	case strings.Contains(t, "no such host"), strings.Contains(t, "server misbehaving"):
		return "the upstream's name does not resolve: check DNS on this machine and the account's upstream (`oauthrelay check-config` prints it)"
	case strings.Contains(t, "connection refused"), strings.Contains(t, "i/o timeout"), strings.Contains(t, "network is unreachable"):
		return "check that this machine may open outbound TCP connections to the account's upstream (port 587: firewalls and some hosting providers block it)"
	case strings.Contains(t, "certificate"):
		return "the upstream's TLS certificate is not trusted: a TLS-inspecting proxy? add its CA with upstream.ca_file"
	case aerr.reply.Code == 421:
		return "the upstream is refusing connections for now (421); the relay backs off and retries by itself"
	}
	return "see the reply above; check the account's upstream (`oauthrelay check-config` prints it) and upstream.tls"
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0304:
		return "1.3"
	case 0x0303:
		return "1.2"
	}
	return fmt.Sprintf("0x%04x", v)
}

// TryLogin signs in to the upstream as account with a fresh token and
// QUITs, without sending: Try again uses it, for an account Microsoft
// refused, before it lets the account's mail go. It returns Microsoft's
// refusal (*smtp.SMTPError) or what stopped it.
func (d *Upstream) TryLogin(ctx context.Context, account string) error {
	u, ok := d.accounts[account]
	if !ok {
		return fmt.Errorf("no account named %s", account)
	}
	if err := d.acquire(ctx, u); err != nil {
		return err
	}
	defer func() { <-u.sessions }()
	c, _, aerr := d.open(ctx, d.addr(u))
	if aerr != nil {
		return fmt.Errorf("cannot reach %s: %s", d.addr(u), aerr.reply)
	}
	d.tokens.Invalidate(account)
	cred, err := d.tokens.Credential(ctx, account)
	if err == nil {
		err = c.Auth(cred.SASL)
	}
	if err != nil {
		c.Close()
		return err
	}
	c.Quit()
	return nil
}
