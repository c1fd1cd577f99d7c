package tokens

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
)

// State is where an account stands with Microsoft.
type State string

const (
	NotConnected   State = "not_connected"   // no refresh token yet: run Connect
	Connected      State = "connected"       // tokens work
	NeedsReconnect State = "needs_reconnect" // the grant is gone: sign in again
	Misconfigured  State = "misconfigured"   // app registration or secret wrong: an admin must fix it
	// Microsoft refused the XOAUTH2 login with a fresh token: the grant
	// works, the mailbox does not take it. Fixed on Microsoft's side, then
	// Reconnect or Try again (Manager.Retry).
	SMTPAuthDisabled State = "smtp_auth_disabled" // 535 5.7.139: SMTP AUTH off for the mailbox or tenant
	SMTPAuthRefused  State = "smtp_auth_refused"  // 535 5.7.3: wrong user, no Send As, no SMTP.Send
)

// smtpState reports whether st came from Microsoft's SMTP login rather
// than from the token endpoint: a token refresh does not clear it.
func smtpState(st State) bool { return st == SMTPAuthDisabled || st == SMTPAuthRefused }

// Explanation says in plain words what went wrong and what to do.
type Explanation struct {
	Code   string `json:"code,omitempty"`   // "AADSTS70008", "535 5.7.139"
	Title  string `json:"title"`            // one line
	Detail string `json:"detail,omitempty"` // what it means
	Action string `json:"action,omitempty"` // what to do
	URL    string `json:"url,omitempty"`    // e.g. the admin consent URL
}

func (e Explanation) String() string {
	s := e.Title
	if e.Code != "" {
		s = e.Code + ": " + s
	}
	if e.Action != "" {
		s += " — " + e.Action
	}
	if e.URL != "" {
		s += " (" + e.URL + ")"
	}
	return s
}

// AccountError is a token failure that is the account's, not the network's:
// the relay pauses the account's mail until it is fixed.
type AccountError struct {
	Account     string
	State       State
	Explanation Explanation
}

func (e *AccountError) Error() string {
	return fmt.Sprintf("account %s %s: %s", e.Account, e.State, e.Explanation)
}

// ErrTransient marks failures worth retrying (network, Entra 5xx, 429).
var ErrTransient = errors.New("temporary failure reaching the sign-in service")

var aadstsRe = regexp.MustCompile(`AADSTS(\d+)`)

// entraCode extracts the AADSTS code from a token error: error_codes in the
// body (x/oauth2 keeps it only there), else the description.
func entraCode(re *oauth2.RetrieveError) int {
	var body struct {
		ErrorCodes []int `json:"error_codes"`
	}
	if json.Unmarshal(re.Body, &body) == nil && len(body.ErrorCodes) > 0 {
		return body.ErrorCodes[0]
	}
	if m := aadstsRe.FindStringSubmatch(re.ErrorDescription); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// AdminConsentURL is where an administrator grants the app's permissions
// for the whole tenant.
func (a Account) AdminConsentURL(redirectURI string) string {
	q := url.Values{}
	q.Set("client_id", a.ClientID)
	if redirectURI != "" {
		q.Set("redirect_uri", redirectURI)
	}
	q.Set("scope", "https://outlook.office365.com/.default")
	return strings.TrimRight(a.Authority, "/") + "/" + url.PathEscape(a.Tenant) + "/v2.0/adminconsent?" + q.Encode()
}

// classify turns a token-endpoint error into a state and explanation, or
// reports it transient.
func classify(err error, a Account, redirectURI string) (State, Explanation, bool) {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, ErrTransient) {
			return "", Explanation{Title: a.tokenService() + " could not be reached", Detail: err.Error()}, true
		}
		return "", Explanation{Title: "token request failed", Detail: err.Error()}, true
	}
	if re.Response != nil && (re.Response.StatusCode >= 500 || re.Response.StatusCode == 429) {
		return "", Explanation{Title: fmt.Sprintf("%s answered HTTP %d; will retry", a.tokenService(), re.Response.StatusCode)}, true
	}
	if a.google() {
		st, ex := classifyGoogle(re, a)
		return st, ex, false
	}
	code := entraCode(re)
	st, ex := ExplainAADSTS(code, re.ErrorCode, a, redirectURI)
	return st, ex, false
}

// ExplainAADSTS explains an Entra ID error code (shared/M365.md).
func ExplainAADSTS(code int, oauthErr string, a Account, redirectURI string) (State, Explanation) {
	c := ""
	if code != 0 {
		c = fmt.Sprintf("AADSTS%d", code)
	}
	if a.certificate() {
		if st, ex, ok := explainCertificateCode(code, c, a); ok {
			return st, ex
		}
	}
	switch code {
	case 65001, 90094:
		return Misconfigured, Explanation{Code: c,
			Title:  "administrator consent is needed",
			Detail: "The app registration has not been granted the SMTP.Send (and offline_access) permission for this tenant, and the user may not consent alone.",
			Action: "send this link to a Global or Privileged Role Administrator, who approves the permissions once; then press Connect again",
			URL:    a.AdminConsentURL(redirectURI)}
	case 70008, 700082:
		return NeedsReconnect, Explanation{Code: c,
			Title:  "the sign-in expired",
			Detail: "The refresh token expired (unused for 90 days, or past its maximum age).",
			Action: "press Connect (or run `oauthrelay connect " + a.Name + "`) and sign in as " + a.Mailbox}
	case 50173:
		return NeedsReconnect, Explanation{Code: c,
			Title:  "the sign-in was revoked",
			Detail: "Microsoft revoked the grant — usually because the password was changed or reset, or an admin revoked sessions.",
			Action: "press Connect and sign in as " + a.Mailbox + " again"}
	case 54005:
		return NeedsReconnect, Explanation{Code: c,
			Title:  "the sign-in code was already used",
			Action: "start the Connect flow again"}
	case 500011:
		return Misconfigured, Explanation{Code: c,
			Title:  "this tenant does not know the Exchange Online resource asked for",
			Detail: "The tenant lives in another Microsoft cloud than the account's (US Government GCC High and DoD, or China operated by 21Vianet, have their own Entra ID and Exchange Online), or Exchange Online is not licensed in it.",
			Action: "set accounts[].cloud to the tenant's cloud (global, usgov, usgov-dod or china) — oauthrelay check-config shows the scopes and servers it implies — and register the app in that cloud's portal; then Connect again (an app-only account: press Try again)"}
	case 7000215:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client secret is wrong",
			Detail: "Entra ID rejected the client secret. A common mistake is to copy the secret's ID instead of its Value.",
			Action: "create a new client secret in the app registration (Certificates & secrets) and set accounts[].client_secret to its Value"}
	case 7000222:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client secret has expired",
			Action: "create a new client secret in the app registration (Certificates & secrets), set accounts[].client_secret, and restart"}
	case 7000218:
		return Misconfigured, Explanation{Code: c,
			Title:  "a client secret is required",
			Detail: "The app registration is a confidential client, or public client flows are not allowed for it.",
			Action: "set accounts[].client_secret, or in the app registration set Authentication → Allow public client flows to Yes"}
	case 50076, 50079:
		return NeedsReconnect, Explanation{Code: c,
			Title:  "multi-factor authentication or a Conditional Access policy requires an interactive sign-in",
			Action: "press Connect and complete the sign-in (with MFA) as " + a.Mailbox + "; if it keeps happening, exclude the relay's sign-in from the policy"}
	case 700016:
		return Misconfigured, Explanation{Code: c,
			Title:  "the app registration was not found in this tenant",
			Action: "check accounts[].client_id and accounts[].tenant"}
	case 90002, 900023:
		return Misconfigured, Explanation{Code: c,
			Title:  "the tenant was not found",
			Action: "check accounts[].tenant: a tenant ID (GUID) or a verified domain"}
	}
	switch oauthErr {
	case "invalid_client", "unauthorized_client":
		cred := "client_secret"
		if a.certificate() {
			cred = "client_certificate_file (uploaded to the app registration)"
		}
		return Misconfigured, Explanation{Code: c, Title: "Entra ID rejected the app registration (" + oauthErr + ")",
			Action: "check accounts[].client_id, " + cred + " and tenant"}
	case "invalid_scope":
		return Misconfigured, Explanation{Code: c, Title: "Entra ID rejected the requested permissions",
			Action: "add SMTP.Send (delegated) or SMTP.SendAsApp (application) to the app registration"}
	case "interaction_required", "consent_required", "login_required":
		return NeedsReconnect, Explanation{Code: c, Title: "Entra ID requires an interactive sign-in (" + oauthErr + ")",
			Action: "press Connect and sign in as " + a.Mailbox}
	}
	return NeedsReconnect, Explanation{Code: c, Title: "Entra ID refused the token request (" + oauthErr + ")",
		Action: "press Connect and sign in again; if that fails, check the app registration"}
}

// ExplainSMTPAuth explains Microsoft's answers to AUTH XOAUTH2, for the
// relay and the status page. signedInAs is who connected the account
// ("" when unknown).
func ExplainSMTPAuth(code int, enhanced string, a Account, signedInAs string) Explanation {
	c := fmt.Sprintf("%d %s", code, enhanced)
	if a.google() {
		return explainGmailAuth(c, a, signedInAs)
	}
	if enhanced == "5.7.3" && signedInAs != "" && !strings.EqualFold(signedInAs, a.Mailbox) {
		return Explanation{Code: c,
			Title:  "signed in as " + signedInAs + " but the mailbox is " + a.Mailbox,
			Detail: "Microsoft accepts the token only for the mailbox of the user who signed in, or a mailbox that user has Send As / Full Access on.",
			Action: "give " + signedInAs + " Send As (Add-RecipientPermission -Identity " + a.Mailbox + " -Trustee " + signedInAs + " -AccessRights SendAs) or Full Access on " + a.Mailbox + ", then press Try again; or press Connect and sign in as " + a.Mailbox}
	}
	switch enhanced {
	case "5.7.139":
		return Explanation{Code: c,
			Title:  "SMTP AUTH is disabled for this mailbox or tenant",
			Detail: "Microsoft 365 turns SMTP client authentication off by default.",
			Action: "in Exchange Online PowerShell run: Set-CASMailbox -Identity " + a.Mailbox + " -SmtpClientAuthenticationDisabled $false (and check Get-TransportConfig | fl SmtpClientAuthenticationDisabled); it can take up to an hour to apply, then press Try again"}
	case "5.7.3":
		return Explanation{Code: c,
			Title: "Microsoft rejected the token for " + a.Mailbox,
			Detail: "The token is valid for Entra ID but not for SMTP: the signed-in user is not " + a.Mailbox +
				" (and has no Send As right on it), the app lacks the SMTP.Send permission, or SMTP AUTH is disabled for the mailbox.",
			Action: "check who connected the account, grant SMTP.Send, and run Set-CASMailbox -Identity " + a.Mailbox + " -SmtpClientAuthenticationDisabled $false; then press Try again (or Connect to sign in again)"}
	}
	return Explanation{Code: c, Title: "Microsoft refused the sign-in", Action: "press Connect and sign in as " + a.Mailbox}
}

// explainCertificateCode explains the Entra ID errors of a token request
// made with a client assertion (tokens/certificate.go). The codes and
// their meanings: learn.microsoft.com's error code reference
// (entra/identity-platform/reference-error-codes), the Azure SDKs'
// troubleshooting guides (ClientCertificateCredential and
// ClientAssertionCredential issues), and Microsoft.Identity.Web's list of
// certificate errors (700027, 700024, 7000214, 1000502, 7000274, 7000277).
func explainCertificateCode(code int, c string, a Account) (State, Explanation, bool) {
	upload := "upload the certificate (the .crt/.pem file named by accounts[].client_certificate_file, " + a.CertFile + " — not the key) to the app registration → Certificates & secrets → Certificates, then press Try again"
	switch code {
	case 700027, 7000274:
		return Misconfigured, Explanation{Code: c,
			Title:  "Entra ID does not accept the client certificate",
			Detail: "The client assertion's signature did not verify against a certificate registered on the app: the certificate is not uploaded to this app registration (or was removed, or has expired there), or the key does not belong to it.",
			Action: upload}, true
	case 700024:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client assertion is not within its valid time range",
			Detail: "Entra ID judged the assertion's start (nbf) and expiry (exp) against its own clock: this machine's clock is wrong.",
			Action: "check the clock: timedatectl should say \"System clock synchronized: yes\" (or chronyc tracking); fix NTP, then press Try again"}, true
	case 7000214, 7000277:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client certificate has been revoked",
			Action: "make a new certificate and key, upload the certificate to the app registration (Certificates & secrets), and point accounts[].client_certificate_file and client_key_file at the new files"}, true
	case 1000502:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client certificate is outside its validity period",
			Action: "check this machine's clock; if the certificate has expired, make a new one, upload it to the app registration (Certificates & secrets) and replace accounts[].client_certificate_file and client_key_file"}, true
	case 700021:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client assertion's application ID does not match client_id",
			Action: "check accounts[].client_id: the Application (client) ID of the app registration the certificate is uploaded to"}, true
	case 700023:
		return Misconfigured, Explanation{Code: c,
			Title:  "the client assertion's audience does not match the tenant",
			Detail: "The assertion names the token endpoint it was sent to (" + a.endpoint().TokenURL + ").",
			Action: "check accounts[].tenant and accounts[].cloud (or authority): the tenant's ID or verified domain, in the cloud it lives in"}, true
	case 50027:
		return Misconfigured, Explanation{Code: c,
			Title:  "Entra ID could not read the client assertion",
			Action: "check accounts[].client_certificate_file and client_key_file with `oauthrelay check-config`; if they are fine, please report this with the log line"}, true
	case 7000218:
		return Misconfigured, Explanation{Code: c,
			Title:  "Entra ID received no client credential",
			Detail: "This account signs in with a certificate, but the token request reached Entra ID without its client assertion — something between the relay and Entra ID (a proxy) changed the request.",
			Action: "check that accounts[].client_certificate_file and client_key_file are set, and that no proxy rewrites requests to " + a.Authority}, true
	case 7000215, 7000222:
		return Misconfigured, Explanation{Code: c,
			Title:  "Entra ID refused the app's credential",
			Detail: "This account signs in with a certificate (accounts[].client_certificate_file), yet Entra ID answered about a client secret.",
			Action: upload}, true
	}
	return "", Explanation{}, false
}

// explainGmailAuth explains Gmail's refusal of an XOAUTH2 login ("535
// 5.7.8 Username and Password not accepted", after its JSON challenge).
func explainGmailAuth(c string, a Account, signedInAs string) Explanation {
	ex := Explanation{Code: c, Title: "Gmail did not accept the token for " + a.Mailbox}
	switch {
	case a.Flow == FlowServiceAccount:
		ex.Detail = "The service account's token is not valid for " + a.Mailbox + "'s mail: domain-wide delegation lacks the scope " + GoogleScope + ", or the user is suspended or has no Gmail."
		ex.Action = "in the Google Admin console check Security > API controls > Domain-wide delegation (the service account's client ID with " + GoogleScope + ") and that " + a.Mailbox + " is an active Gmail user; then press Try again"
	case signedInAs != "" && !strings.EqualFold(signedInAs, a.Mailbox):
		ex.Title = "signed in to Google as " + signedInAs + " but the mailbox is " + a.Mailbox
		ex.Detail = "Gmail accepts a token only for the account that signed in."
		ex.Action = "press Connect and sign in as " + a.Mailbox
	default:
		ex.Detail = "The sign-in did not grant the scope " + GoogleScope + ", or it was revoked, or the Workspace admin turned off IMAP/SMTP or third-party access for the user."
		ex.Action = "press Connect and sign in as " + a.Mailbox + " again, allowing \"Read, compose, send and permanently delete all your email\"; if it persists, ask the Workspace admin (Apps > Google Workspace > Gmail > End User Access)"
	}
	return ex
}
