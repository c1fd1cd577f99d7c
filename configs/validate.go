package configs

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Problem is one thing wrong with the configuration: the key and what to do.
type Problem struct {
	Key string
	Msg string
}

func (p Problem) String() string { return p.Key + ": " + p.Msg }

// Problems is every problem found; it is an error when non-empty.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return fmt.Sprintf("configuration has %d problem(s):\n  %s", len(ps), strings.Join(lines, "\n  "))
}

// MinAdminToken is the shortest admin token serve accepts (admin.New).
const MinAdminToken = 16

// keysafeKeyProblem says what is wrong with a keysafe key as written (in
// keysafe.key or its file) — "is not base64", "is the base64 of 16 bytes" —
// or "" if it is the base64 of 32 bytes: the rule of tokens.LoadKey, which
// configs may not import.
func keysafeKeyProblem(text string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	switch {
	case err != nil:
		return "is not base64"
	case len(key) != 32:
		return fmt.Sprintf("is the base64 of %d bytes", len(key))
	}
	return ""
}

var accountName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Validate checks c and returns every problem found.
func Validate(c *Config) Problems {
	var p Problems
	add := func(key, format string, args ...any) {
		p = append(p, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	hostPort := func(key, val, example string) {
		if _, port, err := net.SplitHostPort(val); err != nil || port == "" {
			add(key, "%q is not host:port — e.g. %s", val, example)
		}
	}

	hostPort("listen.addr", c.Listen.Addr, "127.0.0.1:2525")
	if len(c.Listen.AllowedNetworks) == 0 {
		add("listen.allowed_networks", "empty — nobody could send; list the networks of your applications, e.g. [127.0.0.0/8]")
	}
	for i, n := range c.Listen.AllowedNetworks {
		if _, err := ParseNetwork(n); err != nil && !isAttached(n) {
			add(fmt.Sprintf("listen.allowed_networks[%d]", i), "%q is not a CIDR, an IP address or attached — e.g. 10.0.0.0/8, 192.0.2.7, attached (this machine's networks)", n)
		}
	}
	if c.Listen.MaxMessageBytes <= 0 {
		add("listen.max_message_bytes", "must be positive — e.g. 36700160 (35 MiB, Microsoft's default mailbox limit)")
	}
	if c.Listen.MaxRecipients < 1 {
		add("listen.max_recipients", "must be at least 1 — RFC 5321 asks for 100")
	}
	if c.Listen.MaxRecipients > 5000 {
		// Each recipient's state (address, last reply) lives in the
		// message's spool record, which is at most 8 MiB.
		add("listen.max_recipients", "%d is more than 5000 — a message's envelope must fit its spool record; send to a list address instead", c.Listen.MaxRecipients)
	}
	if c.Listen.MaxSessions < 1 {
		add("listen.max_sessions", "must be at least 1 — e.g. 100")
	}
	if n := c.Listen.MaxSessionsPerClient; n < 0 {
		add("listen.max_sessions_per_client", "must be 0 (half of listen.max_sessions) or at least 1 — e.g. 50")
	} else if m := c.Listen.MaxSessions; m >= 1 && n > m {
		add("listen.max_sessions_per_client", "%d is more than listen.max_sessions (%d): one host could take every session — at most %d, or 0 for half of it", n, m, m)
	}
	if c.Listen.MaxJunkCommands < 10 {
		add("listen.max_junk_commands", "must be at least 10 (a client may well send EHLO, STARTTLS, EHLO, AUTH, RSET and NOOP before its mail) — e.g. 100")
	}
	if c.Listen.MaxSessionTime <= 0 {
		add("listen.max_session_time", "must be positive — e.g. 1h")
	}
	if c.Listen.ReadTimeout <= 0 || c.Listen.WriteTimeout <= 0 {
		add("listen.read_timeout", "read_timeout and write_timeout must be positive — e.g. 5m")
	}
	if c.Listen.MaxDataTime < 0 {
		add("listen.max_data_time", "must be positive, or 0 for one minute per MiB of listen.max_message_bytes (at least 10m) — e.g. 35m")
	}
	if a := c.Listen.NullSenderAccount; a != "" && !slices.ContainsFunc(c.Accounts, func(acc Account) bool { return acc.Name == a }) {
		var names []string
		for _, acc := range c.Accounts {
			names = append(names, acc.Name)
		}
		add("listen.null_sender_account", "%q is not an account — name one of [%s], or leave it empty for the first", a, strings.Join(names, ", "))
	}
	if (c.Listen.TLS.CertFile == "") != (c.Listen.TLS.KeyFile == "") {
		add("listen.tls", "cert_file and key_file go together — set both to enable STARTTLS, or neither")
	}
	if c.Listen.Auth.Required && c.Listen.Auth.UsersFile == "" {
		add("listen.auth.required", "true but listen.auth.users_file is empty — name a file of user:bcrypt-hash lines")
	}

	hostPort("admin.addr", c.Admin.Addr, "127.0.0.1:8025")
	// An empty token is fine: serve makes one (admin.token beside the keysafe).
	if n := len(c.Admin.Token); n > 0 && n < MinAdminToken {
		key := "admin.token"
		if c.Admin.TokenFile != "" {
			key = "admin.token_file" // the token was read from it
		}
		add(key, "is %d characters; serve needs at least %d — make one with: head -c 24 /dev/urandom | base64", n, MinAdminToken)
	}
	if host, _, err := net.SplitHostPort(c.Admin.Addr); err == nil && c.Admin.PublicURL == "" && (host == "" || host == "0.0.0.0" || host == "::") {
		for _, a := range c.Accounts {
			if a.Flow == FlowAuthorizationCode || a.Flow == "" {
				add("admin.public_url", "missing — admin.addr listens on all interfaces, so the OAuth redirect URI cannot be guessed; set the URL browsers use, e.g. https://relay.contoso.com")
				break
			}
		}
	}
	if c.Admin.PublicURL != "" {
		if u, err := url.Parse(c.Admin.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("admin.public_url", "%q is not an http(s) URL — e.g. https://relay.contoso.com (the OAuth redirect URI is this + /oauth/callback)", c.Admin.PublicURL)
		}
	}

	if c.Spool.Dir == "" {
		add("spool.dir", "missing — the folder where accepted mail is kept, e.g. /var/lib/oauthrelay/spool")
	}
	if c.Spool.FailedRetention <= 0 {
		add("spool.failed_retention", "must be positive — e.g. 168h (a week)")
	}
	if c.Keysafe.Path == "" {
		add("keysafe.path", "missing — the encrypted token file, e.g. /var/lib/oauthrelay/keysafe.bin")
	}
	if c.Keysafe.Key != "" && c.Keysafe.KeyFile != "" {
		add("keysafe.key", "set together with keysafe.key_file — keep only one")
	}
	if c.Keysafe.Key != "" {
		if what := keysafeKeyProblem(c.Keysafe.Key); what != "" {
			add("keysafe.key", "%s — it must be the base64 of 32 random bytes: the key the keysafe was made with, or for a new one: head -c 32 /dev/urandom | base64", what)
		}
	}
	if c.Tokens.RefreshSkew < 0 || c.Tokens.RefreshSkew >= 50*60e9 {
		add("tokens.refresh_skew", "must be between 0 and 50m (access tokens live about 60m) — e.g. 5m")
	}
	if c.Tokens.BackgroundRefresh <= 0 {
		add("tokens.background_refresh", "must be positive — e.g. 24h (refresh tokens expire after 90 days unused)")
	}

	d := c.Delivery
	if d.Workers < 1 {
		add("delivery.workers", "must be at least 1 — e.g. 16")
	}
	if d.Connections < 1 {
		add("delivery.connections", "must be at least 1 — Microsoft allows 3 per mailbox")
	}
	if d.RatePerMinute < 0 {
		add("delivery.rate_per_minute", "must be 0 (unlimited) or positive — Microsoft allows 30 per mailbox")
	}
	if d.MessagesPerConnection < 1 {
		add("delivery.messages_per_connection", "must be at least 1 — e.g. 100")
	}
	if d.IdleTimeout <= 0 || d.DialTimeout <= 0 || d.CommandTimeout <= 0 {
		add("delivery", "idle_timeout, dial_timeout and command_timeout must be positive — e.g. 60s, 30s, 5m")
	}
	if len(d.Retry) == 0 {
		add("delivery.retry", "empty — list the delays between attempts, e.g. [1m, 5m, 15m, 30m, 1h, 2h, 4h]")
	}
	for i, r := range d.Retry {
		if r <= 0 {
			add(fmt.Sprintf("delivery.retry[%d]", i), "must be positive, e.g. 5m")
		}
	}
	if d.Jitter < 0 || d.Jitter >= 1 {
		add("delivery.jitter", "must be in [0, 1) — e.g. 0.1 for ±10%%")
	}
	if d.MaxAge <= 0 {
		add("delivery.max_age", "must be positive — e.g. 120h (5 days, as Postfix)")
	}

	if c.Upstream.Addr != "" { // empty: each account's provider, cloud and kind decide
		hostPort("upstream.addr", c.Upstream.Addr, "smtp.office365.com:587 (or leave it empty)")
	}
	switch c.Upstream.TLS {
	case "starttls", "implicit":
	case "none":
		if !c.Upstream.InsecureAllowPlaintext {
			add("upstream.tls", "\"none\" would send OAuth tokens in clear text — use starttls (or, for tests only, also set upstream.insecure_allow_plaintext: true)")
		}
	default:
		add("upstream.tls", "%q is not one of starttls, implicit", c.Upstream.TLS)
	}
	if c.Upstream.Hostname == "" {
		add("upstream.hostname", "missing — the name sent with EHLO, e.g. relay.contoso.com")
	}

	validateInbound(&c.Inbound, add)

	if len(c.Accounts) == 0 {
		add("accounts", "none configured — add at least one Microsoft 365 mailbox (see configs/oauthrelay.yaml)")
	}
	names := map[string]int{}
	for i := range c.Accounts {
		validateAccount(fmt.Sprintf("accounts[%d]", i), &c.Accounts[i], names, i, add)
	}

	if c.Alert.WebhookURL != "" {
		if u, err := url.Parse(c.Alert.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("alert.webhook_url", "is not an http(s) URL")
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return p
}

func validateAccount(key string, a *Account, names map[string]int, i int, add func(key, format string, args ...any)) {
	switch {
	case a.Name == "":
		add(key+".name", "missing — a short name such as \"helpdesk\" (letters, digits, - and _)")
	case !accountName.MatchString(a.Name):
		add(key+".name", "%q must be lower-case letters, digits, - and _ (it appears in URLs)", a.Name)
	default:
		if j, dup := names[a.Name]; dup {
			add(key+".name", "%q is already used by accounts[%d] — names must be unique", a.Name, j)
		}
		names[a.Name] = i
	}
	switch a.Provider {
	case ProviderMicrosoft:
		validateMicrosoft(key, a, add)
	case ProviderGoogle:
		validateGoogle(key, a, add)
	default:
		add(key+".provider", "%q is not supported — use microsoft or google", a.Provider)
	}
	if a.Upstream != "" {
		if _, port, err := net.SplitHostPort(a.Upstream); err != nil || port == "" {
			add(key+".upstream", "%q is not host:port — e.g. smtp.office365.com:587 (or leave it empty: %s)", a.Upstream, a.Profile().SMTP)
		}
	}
	if a.Mailbox == "" {
		add(key+".mailbox", "missing — the mailbox address the relay signs in as")
	} else if addr, err := mail.ParseAddress(a.Mailbox); err != nil || addr.Address != a.Mailbox {
		add(key+".mailbox", "%q is not a plain e-mail address — e.g. helpdesk@contoso.com", a.Mailbox)
	}
	for j, p := range a.Protocols {
		if p != "smtp" && p != "imap" && p != "pop3" {
			add(fmt.Sprintf("%s.protocols[%d]", key, j), "%q is not a protocol — smtp, imap or pop3 (the scopes a sign-in asks for)", p)
		}
	}
	if len(a.Senders) == 0 {
		add(key+".senders", "empty — list the envelope senders this account sends for, e.g. [\"*@contoso.com\"]")
	}
	for j, s := range a.Senders {
		if err := checkSenderPattern(s); err != nil {
			add(fmt.Sprintf("%s.senders[%d]", key, j), "%q %v", s, err)
		}
	}
	if a.Authority == "" && a.Provider == ProviderMicrosoft {
		// An unknown cloud left it unset; its own problem says so.
	} else if u, err := url.Parse(a.Authority); err != nil || u.Host == "" {
		add(key+".authority", "%q is not a URL — leave it unset for %s", a.Authority, DefaultAuthority)
	} else if u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())) {
		add(key+".authority", "%q must be https (plain http only for a loopback test server)", a.Authority)
	}
	switch a.RewriteSender {
	case RewriteOff, RewriteEnvelope, RewriteFrom:
	default:
		add(key+".rewrite_sender", "%q is not one of off, envelope, from", a.RewriteSender)
	}
}

// validateMicrosoft checks what a Microsoft 365 account needs: a tenant,
// an app registration, a flow with its credential, a known cloud and kind.
func validateMicrosoft(key string, a *Account, add func(key, format string, args ...any)) {
	if a.Tenant == "" {
		add(key+".tenant", "missing — your tenant ID (a GUID) or verified domain such as contoso.onmicrosoft.com")
	}
	if a.ClientID == "" {
		add(key+".client_id", "missing — the Application (client) ID of your Entra app registration")
	}
	if a.ServiceAccountFile != "" {
		add(key+".service_account_file", "is for provider: google — a Microsoft app-only account uses client_secret or client_certificate_file + client_key_file")
	}
	switch a.Flow {
	case FlowAuthorizationCode, FlowDeviceCode:
		if a.ClientCertificateFile != "" || a.ClientKeyFile != "" {
			add(key+".client_certificate_file", "is for flow: client_credentials (app-only) — a delegated sign-in uses no certificate")
		}
	case FlowClientCredentials:
		cert := a.ClientCertificateFile != "" || a.ClientKeyFile != ""
		switch {
		case cert && a.ClientSecret != "":
			add(key+".client_secret", "set together with client_certificate_file — use one credential: remove client_secret, or the certificate keys")
		case cert && a.ClientCertificateFile == "":
			add(key+".client_certificate_file", "missing — client_key_file needs the certificate (PEM) registered on the app")
		case cert && a.ClientKeyFile == "":
			add(key+".client_key_file", "missing — client_certificate_file needs its private key (PEM)")
		case !cert && a.ClientSecret == "":
			add(key+".client_secret", "missing — the client_credentials flow needs the app's client secret (use ${VAR} or client_secret_file) or a certificate (client_certificate_file + client_key_file)")
		}
		switch strings.ToLower(a.Tenant) {
		case "common", "organizations", "consumers":
			add(key+".tenant", "%q cannot be used with client_credentials — give the tenant ID or domain", a.Tenant)
		}
	case FlowServiceAccount:
		add(key+".flow", "service_account is Google's — a Microsoft account uses authorization_code, device_code or client_credentials")
	default:
		add(key+".flow", "%q is not one of authorization_code, device_code, client_credentials", a.Flow)
	}
	if _, ok := microsoftClouds[a.Cloud]; !ok {
		hint := ""
		switch strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(a.Cloud)) {
		case "global", "commercial", "worldwide", "gcc":
			hint = " — GCC (moderate) is the global cloud: global"
		case "usgov", "gcchigh", "usgovernment", "government":
			hint = " — GCC High is usgov"
		case "dod", "usgovdod", "gccdod":
			hint = " — DoD is usgov-dod"
		case "china", "21vianet", "cn", "azurechina":
			hint = " — operated by 21Vianet is china"
		}
		add(key+".cloud", "%q is not one of %s%s", a.Cloud, strings.Join(Clouds(), ", "), hint)
	}
	switch a.Kind {
	case KindMailbox:
	case KindHVE:
		if a.Flow != FlowClientCredentials {
			add(key+".flow", "%q cannot sign in a High Volume Email account — HVE takes app-only OAuth: flow: client_credentials, with the app on the account's allowed list (Add-HVEAppAccess)", a.Flow)
		}
		if a.Cloud != CloudGlobal {
			add(key+".kind", "hve is offered in the global cloud only — cloud is %q", a.Cloud)
		}
		for j, p := range a.Protocols {
			if p != "smtp" {
				add(fmt.Sprintf("%s.protocols[%d]", key, j), "%q cannot be used with kind: hve — a High Volume Email account is a mail user with no mailbox to read; read mail with another account", p)
			}
		}
	default:
		add(key+".kind", "%q is not one of mailbox, hve", a.Kind)
	}
}

// validateGoogle checks a Google Workspace / Gmail account.
func validateGoogle(key string, a *Account, add func(key, format string, args ...any)) {
	if a.Cloud != "" {
		add(key+".cloud", "is for provider: microsoft — remove it")
	}
	if a.Kind != KindMailbox {
		add(key+".kind", "%q is for provider: microsoft — remove it", a.Kind)
	}
	if a.ClientCertificateFile != "" || a.ClientKeyFile != "" {
		add(key+".client_certificate_file", "is for Microsoft app-only accounts — a Google service account signs with service_account_file")
	}
	switch a.Flow {
	case FlowAuthorizationCode:
		if a.ClientID == "" {
			add(key+".client_id", "missing — the OAuth client ID from Google Cloud console (APIs & Services > Credentials)")
		}
		if a.ClientSecret == "" {
			add(key+".client_secret", "missing — Google requires the OAuth client's secret even for a desktop app (use ${VAR} or client_secret_file)")
		}
	case FlowServiceAccount:
		if a.ServiceAccountFile == "" {
			add(key+".service_account_file", "missing — the service account's JSON key (Google Cloud console > IAM > Service accounts > Keys)")
		}
	case FlowDeviceCode:
		add(key+".flow", "device_code cannot be used with Google — Google's device flow does not allow the Gmail scope (https://mail.google.com/); use authorization_code (Connect page) or service_account (Workspace, domain-wide delegation)")
	case FlowClientCredentials:
		add(key+".flow", "client_credentials is Microsoft's — for Google use service_account (Workspace, domain-wide delegation) or authorization_code")
	default:
		add(key+".flow", "%q is not one of authorization_code, service_account", a.Flow)
	}
}

func checkSenderPattern(s string) error {
	if s == "*" {
		return nil
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || domain == "" || local == "" || strings.Contains(domain, "@") {
		return fmt.Errorf("is not a sender pattern — use user@domain, *@domain or *")
	}
	if strings.Contains(domain, "*") && !strings.HasPrefix(domain, "*.") {
		return fmt.Errorf("may only use * at the start of the domain (*@*.contoso.com)")
	}
	return nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

// ParseNetwork reads a CIDR or a single address.
func ParseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func validateInbound(in *Inbound, add func(key, format string, args ...any)) {
	hostPort := func(key, val, example string) {
		if _, port, err := net.SplitHostPort(val); err != nil || port == "" {
			add(key, "%q is not host:port — e.g. %s", val, example)
		}
	}
	if in.IMAP.Addr != "" {
		hostPort("inbound.imap.addr", in.IMAP.Addr, "127.0.0.1:1143 (empty turns the IMAP listener off)")
		if in.IMAP.Upstream != "" {
			hostPort("inbound.imap.upstream", in.IMAP.Upstream, "outlook.office365.com:993 (or leave it empty)")
		}
	}
	if in.POP3.Addr != "" {
		hostPort("inbound.pop3.addr", in.POP3.Addr, "127.0.0.1:1110 (empty turns the POP3 listener off)")
		if in.POP3.Upstream != "" {
			hostPort("inbound.pop3.upstream", in.POP3.Upstream, "outlook.office365.com:995 (or leave it empty)")
		}
	}
	if in.Enabled() && in.UsersFile == "" {
		add("inbound.users_file", "missing — the IMAP/POP3 listeners need local users: a file of user:bcrypt-hash[:account] lines (make a hash with: htpasswd -nbB user password)")
	}
	if in.LoginCacheTTL < 0 {
		add("inbound.login_cache_ttl", "must not be negative — e.g. 5m, or 0s to check every login with bcrypt")
	}
	if in.MaxConnectionsPerAccount < 1 {
		add("inbound.max_connections_per_account", "must be at least 1 — e.g. 16")
	}
}

// shadowedSenders warns about each sender pattern an earlier account's
// pattern already takes: the first matching account wins, so such a
// pattern never routes anything (a "*@contoso.com" account above an
// "alerts@contoso.com" one).
func shadowedSenders(c *Config) []Warning {
	var ws []Warning
	for i := range c.Accounts {
		for j, p := range c.Accounts[i].Senders {
		earlier:
			for k := range i {
				for _, q := range c.Accounts[k].Senders {
					if senderCovers(q, p) {
						ws = append(ws, Warning{Key: fmt.Sprintf("accounts[%d].senders[%d]", i, j),
							Msg: fmt.Sprintf("%q is taken by accounts[%d] (%s, %q) first — the first matching account wins: move %s above it, or narrow that pattern", p, k, c.Accounts[k].Name, q, c.Accounts[i].Name)})
						break earlier
					}
				}
			}
		}
	}
	return ws
}

// senderCovers reports whether every sender pattern p matches is matched
// by pattern q too (patterns as relay.Router reads them).
func senderCovers(q, p string) bool {
	q, p = strings.ToLower(q), strings.ToLower(p)
	if q == "*" {
		return true
	}
	if p == "*" {
		return false
	}
	ql, qd, _ := strings.Cut(q, "@")
	pl, pd, _ := strings.Cut(p, "@")
	if ql != "*" && ql != pl {
		return false
	}
	if qd == pd {
		return true
	}
	if rest, ok := strings.CutPrefix(qd, "*."); ok {
		return strings.HasSuffix(strings.TrimPrefix(pd, "*"), "."+rest)
	}
	return false
}
