package configs

// Providers, clouds and kinds of account: where an account signs in and
// which servers it uses, so one key (provider, cloud, kind) sets them all.
//
// Microsoft's national clouds (README, "National clouds"):
//   - Entra authorities: https://learn.microsoft.com/entra/identity-platform/authentication-national-cloud
//     (US Government login.microsoftonline.us; 21Vianet
//     login.partner.microsoftonline.cn, per docs.azure.cn's copy of it).
//   - Exchange Online hosts and scope resources per cloud as EmailEngine's
//     Outlook setup guide lists them (GCC High smtp.office365.us /
//     outlook.office365.us, DoD outlook-dod.office365.us, 21Vianet
//     partner.outlook.cn with the resource https://partner.outlook.cn).
//
// Google: smtp.gmail.com:587, imap.gmail.com:993, pop.gmail.com:995 and the
// scope https://mail.google.com/ (https://developers.google.com/gmail/imap/xoauth2-protocol).

// Providers.
const (
	ProviderMicrosoft = "microsoft"
	ProviderGoogle    = "google"
)

// Microsoft clouds.
const (
	CloudGlobal   = "global"
	CloudUSGov    = "usgov"     // GCC High
	CloudUSGovDoD = "usgov-dod" // DoD
	CloudChina    = "china"     // operated by 21Vianet
)

// Kinds of account.
const (
	KindMailbox = "mailbox"
	KindHVE     = "hve" // Microsoft 365 High Volume Email
)

// Profile is what a provider, cloud and kind of account imply. An
// account's authority and upstream keys, and upstream.addr /
// inbound.*.upstream, win over it.
type Profile struct {
	// Authority is the sign-in service's base URL.
	Authority string
	// SMTP, IMAP and POP3 are the servers, host:port (SMTP with
	// STARTTLS, IMAP and POP3 with implicit TLS).
	SMTP, IMAP, POP3 string
	// Resource is what delegated scopes are named under
	// (Resource + "/SMTP.Send"); AppResource is what an app-only token
	// asks for (AppResource + "/.default"). Microsoft only.
	Resource, AppResource string
}

var microsoftClouds = map[string]Profile{
	CloudGlobal: {Authority: "https://login.microsoftonline.com",
		SMTP: "smtp.office365.com:587", IMAP: "outlook.office365.com:993", POP3: "outlook.office365.com:995",
		Resource: "https://outlook.office.com", AppResource: "https://outlook.office365.com"},
	CloudUSGov: {Authority: "https://login.microsoftonline.us",
		SMTP: "smtp.office365.us:587", IMAP: "outlook.office365.us:993", POP3: "outlook.office365.us:995",
		Resource: "https://outlook.office365.us", AppResource: "https://outlook.office365.us"},
	CloudUSGovDoD: {Authority: "https://login.microsoftonline.us",
		SMTP: "outlook-dod.office365.us:587", IMAP: "outlook-dod.office365.us:993", POP3: "outlook-dod.office365.us:995",
		Resource: "https://outlook.office365.us", AppResource: "https://outlook.office365.us"},
	CloudChina: {Authority: "https://login.partner.microsoftonline.cn",
		SMTP: "smtp.partner.outlook.cn:587", IMAP: "partner.outlook.cn:993", POP3: "partner.outlook.cn:995",
		Resource: "https://partner.outlook.cn", AppResource: "https://partner.outlook.cn"},
}

// HVESMTP is High Volume Email's submission server (global cloud only).
const HVESMTP = "smtp-hve.office365.com:587"

// GoogleProfile is Gmail's and Google Workspace's. Its authority is
// Google's sign-in page; tokens come from GoogleTokenURL.
var GoogleProfile = Profile{Authority: "https://accounts.google.com",
	SMTP: "smtp.gmail.com:587", IMAP: "imap.gmail.com:993", POP3: "pop.gmail.com:995"}

// Google's endpoints. An account's authority (tests, a proxy) replaces
// both: authority + /o/oauth2/v2/auth and authority + /token.
const (
	GoogleAuthURL  = "https://accounts.google.com/o/oauth2/v2/auth"
	GoogleTokenURL = "https://oauth2.googleapis.com/token"
)

// Clouds lists the Microsoft clouds, in the order they are documented.
func Clouds() []string { return []string{CloudGlobal, CloudUSGov, CloudUSGovDoD, CloudChina} }

// Profile returns what a's provider, cloud and kind imply; an unknown
// provider or cloud gives the zero Profile (validation names it).
func (a *Account) Profile() Profile {
	if a.Provider == ProviderGoogle {
		return GoogleProfile
	}
	cloud := a.Cloud
	if cloud == "" {
		cloud = CloudGlobal
	}
	p := microsoftClouds[cloud]
	if a.Kind == KindHVE {
		p.SMTP = HVESMTP
	}
	return p
}

// SMTPUpstream is the submission server a's mail goes to: its own
// upstream key, else upstream.addr, else its profile's.
func (c *Config) SMTPUpstream(a *Account) string {
	switch {
	case a.Upstream != "":
		return a.Upstream
	case c.Upstream.Addr != "":
		return c.Upstream.Addr
	}
	return a.Profile().SMTP
}

// IMAPUpstream and POP3Upstream are the servers the inbound proxies sign
// in to for a: inbound.imap.upstream / inbound.pop3.upstream if set, else
// its profile's.
func (c *Config) IMAPUpstream(a *Account) string {
	if c.Inbound.IMAP.Upstream != "" {
		return c.Inbound.IMAP.Upstream
	}
	return a.Profile().IMAP
}

// POP3Upstream: see IMAPUpstream.
func (c *Config) POP3Upstream(a *Account) string {
	if c.Inbound.POP3.Upstream != "" {
		return c.Inbound.POP3.Upstream
	}
	return a.Profile().POP3
}
