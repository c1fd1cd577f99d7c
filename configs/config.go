// Package configs holds oauthrelay's typed configuration: the Config struct,
// its defaults, loading (defaults < YAML file < OAUTHRELAY_* environment <
// command-line flags), secret resolution (${VAR} expansion and *_file keys)
// and validation. The example files in this folder are loaded by a test.
//
// Nothing is guessed: every value that cannot be read as its key's type (a
// duration without a unit, "sixteen" for a number, a list where one value
// belongs), every unknown key or OAUTHRELAY_* variable, and every value serve
// would refuse is a Problem naming the key, the value and the fix, and all of
// them are reported at once. A string key takes the text as typed, never
// what YAML would make of it (0x1234 stays "0x1234").
//
// configs is a leaf: it imports no other package of this module and never
// reaches the network (it only lists this machine's interface addresses,
// for the "attached" network keyword).
package configs

import "time"

// Config is the whole configuration of one oauthrelay instance.
type Config struct {
	Listen   Listen    `yaml:"listen"`
	Admin    Admin     `yaml:"admin"`
	Spool    Spool     `yaml:"spool"`
	Keysafe  Keysafe   `yaml:"keysafe"`
	Tokens   Tokens    `yaml:"tokens"`
	Delivery Delivery  `yaml:"delivery"`
	Upstream Upstream  `yaml:"upstream"`
	Inbound  Inbound   `yaml:"inbound"`
	Accounts []Account `yaml:"accounts"`
	Log      Log       `yaml:"log"`
	Alert    Alert     `yaml:"alert"`
}

// Alert configures notifications about accounts.
type Alert struct {
	// WebhookURL receives a JSON POST when an account needs attention and
	// when it recovers.
	WebhookURL string `yaml:"webhook_url" secret:"true"`
}

// Listen configures the SMTP listener the applications talk to.
type Listen struct {
	// Addr is host:port of the SMTP listener.
	Addr string `yaml:"addr"`
	// Hostname is the name used in the greeting and the Received: header.
	Hostname string `yaml:"hostname"`
	// AllowedNetworks lists the CIDRs (or single addresses) that may connect.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// MaxMessageBytes is advertised with SIZE and enforced.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MaxRecipients per message. RFC 5321 4.5.3.1.8: at least 100.
	MaxRecipients int `yaml:"max_recipients"`
	// MaxSessions caps concurrent SMTP sessions; more get 421 4.7.0.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerClient caps the sessions one client address may have
	// open, so one host cannot take every slot; 0: half of MaxSessions
	// (SessionsPerClient).
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`
	// MaxJunkCommands is how many commands a session may send without
	// completing a message (NOOP, RSET, VRFY, HELP, EHLO, refused ones)
	// before it is closed; Postfix's smtpd_junk_command_limit.
	MaxJunkCommands int `yaml:"max_junk_commands"`
	// MaxSessionTime closes a session this old (after a message being
	// received).
	MaxSessionTime time.Duration `yaml:"max_session_time"`
	// ReadTimeout bounds each read (a command, or the next octets of a
	// message); WriteTimeout each reply.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxDataTime bounds a whole DATA; 0: derived from MaxMessageBytes
	// (DataTime).
	MaxDataTime time.Duration `yaml:"max_data_time"`
	// NullSenderAccount takes mail from the null sender <> (bounces, DSNs)
	// whose From: no account's senders match; "": the first account.
	NullSenderAccount string     `yaml:"null_sender_account"`
	TLS               ListenTLS  `yaml:"tls"`
	Auth              ListenAuth `yaml:"auth"`
}

// SessionsPerClient is listen.max_sessions_per_client, or for 0 half of
// listen.max_sessions (at least 1).
func (l Listen) SessionsPerClient() int {
	if l.MaxSessionsPerClient > 0 {
		return l.MaxSessionsPerClient
	}
	return max(l.MaxSessions/2, 1)
}

// DataTime is listen.max_data_time, or for 0 one minute per MiB of
// listen.max_message_bytes (a link of about 140 kbit/s), at least 10
// minutes: 35 minutes for the default 35 MiB. It grows with the size
// limit, so raising that never cuts off a big message on a slow link.
func (l Listen) DataTime() time.Duration {
	if l.MaxDataTime > 0 {
		return l.MaxDataTime
	}
	const mib = 1 << 20
	minutes := (l.MaxMessageBytes + mib - 1) / mib
	return max(time.Duration(minutes)*time.Minute, 10*time.Minute)
}

// NullSenderAccount is listen.null_sender_account, or the first account.
func (c *Config) NullSenderAccount() string {
	if c.Listen.NullSenderAccount != "" || len(c.Accounts) == 0 {
		return c.Listen.NullSenderAccount
	}
	return c.Accounts[0].Name
}

// ListenTLS enables STARTTLS on the listener when both files are set.
type ListenTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ListenAuth configures optional client authentication (PLAIN/LOGIN).
type ListenAuth struct {
	// UsersFile holds "user:bcrypt-hash" lines.
	UsersFile string `yaml:"users_file"`
	// Required makes MAIL without AUTH fail with 530 5.7.0.
	Required bool `yaml:"required"`
}

// Admin configures the admin HTTP server (Connect page, API, metrics).
type Admin struct {
	Addr string `yaml:"addr"`
	// PublicURL is how a browser reaches the admin server; the OAuth
	// redirect URI is PublicURL + "/oauth/callback".
	PublicURL string `yaml:"public_url"`
	Token     string `yaml:"token" secret:"true"`
	TokenFile string `yaml:"token_file"`
}

// Spool configures the on-disk queue.
type Spool struct {
	Dir string `yaml:"dir"`
	// FailedRetention is how long permanently failed messages stay in failed/.
	FailedRetention time.Duration `yaml:"failed_retention"`
}

// Keysafe configures the encrypted token store.
type Keysafe struct {
	Path string `yaml:"path"`
	// Key is a base64 AES-256 key (32 bytes); usually ${OAUTHRELAY_KEYSAFE_KEY}.
	Key     string `yaml:"key" secret:"true"`
	KeyFile string `yaml:"key_file"`
}

// Tokens configures access-token caching and background refresh.
type Tokens struct {
	// RefreshSkew: an access token is renewed this long before it expires.
	RefreshSkew time.Duration `yaml:"refresh_skew"`
	// BackgroundRefresh renews every delegated refresh token this often so
	// Microsoft's 90-day inactivity expiry never hits a quiet relay.
	BackgroundRefresh time.Duration `yaml:"background_refresh"`
}

// Delivery configures upstream delivery and retries.
type Delivery struct {
	// Workers is how many messages are delivered at once over all accounts.
	Workers int `yaml:"workers"`
	// Connections per account (Microsoft allows 3 per mailbox).
	Connections int `yaml:"connections"`
	// RatePerMinute per account (Microsoft: 30 per mailbox); 0 = unlimited.
	RatePerMinute float64 `yaml:"rate_per_minute"`
	// MessagesPerConnection before a connection is closed and a new one made.
	MessagesPerConnection int           `yaml:"messages_per_connection"`
	IdleTimeout           time.Duration `yaml:"idle_timeout"`
	DialTimeout           time.Duration `yaml:"dial_timeout"`
	CommandTimeout        time.Duration `yaml:"command_timeout"`
	// Retry is the delay after each failed attempt; the last repeats.
	Retry []time.Duration `yaml:"retry"`
	// Jitter spreads each delay by ± this fraction.
	Jitter float64 `yaml:"jitter"`
	// MaxAge after which pending recipients fail with 4.4.7.
	MaxAge time.Duration `yaml:"max_age"`
}

// Upstream is the Microsoft 365 submission server.
type Upstream struct {
	Addr string `yaml:"addr"`
	// TLS is "starttls" (port 587) or "implicit" (port 465).
	TLS string `yaml:"tls"`
	// Hostname is sent with EHLO.
	Hostname string `yaml:"hostname"`
	// CAFile adds a CA to the system roots (tests, TLS-inspecting proxies).
	CAFile string `yaml:"ca_file"`
	// InsecureAllowPlaintext sends bearer tokens without TLS. Tests only.
	InsecureAllowPlaintext bool `yaml:"insecure_allow_plaintext"`
}

// Inbound configures the local IMAP and POP3 listeners (package inbound):
// a local app signs in with a password from UsersFile, the relay signs in
// upstream with the account's OAuth token and relays the session. Both are
// off until their addr is set.
type Inbound struct {
	// UsersFile holds "user:bcrypt-hash[:account]" lines; without an
	// account, the account whose mailbox equals user.
	UsersFile string      `yaml:"users_file"`
	IMAP      InboundIMAP `yaml:"imap"`
	POP3      InboundPOP3 `yaml:"pop3"`
	// MaxConnectionsPerAccount caps the sessions open at once per account
	// (both protocols); more are refused as temporary.
	MaxConnectionsPerAccount int `yaml:"max_connections_per_account"`
	// LoginCacheTTL is how long a successful local login is remembered
	// (in memory, keyed by an HMAC of user and password) so an app that
	// reconnects every minute does not pay bcrypt each time; 0 turns it
	// off.
	LoginCacheTTL time.Duration `yaml:"login_cache_ttl"`
}

// InboundIMAP is the local IMAP listener; Addr "" is off.
type InboundIMAP struct {
	Addr string `yaml:"addr"`
	// Upstream is Exchange Online's IMAP server (implicit TLS, trusted
	// like SMTP's, with upstream.ca_file).
	Upstream string `yaml:"upstream"`
}

// InboundPOP3 is the local POP3 listener; Addr "" is off.
type InboundPOP3 struct {
	Addr string `yaml:"addr"`
	// Upstream is Exchange Online's POP3 server (implicit TLS).
	Upstream string `yaml:"upstream"`
}

// Enabled reports whether either inbound listener is on.
func (i Inbound) Enabled() bool { return i.IMAP.Addr != "" || i.POP3.Addr != "" }

// Flow names.
const (
	FlowAuthorizationCode = "authorization_code"
	FlowDeviceCode        = "device_code"
	FlowClientCredentials = "client_credentials"
	// FlowServiceAccount is Google's service account with domain-wide
	// delegation (a JWT bearer grant with sub = the mailbox).
	FlowServiceAccount = "service_account"
)

// Sender rewriting modes.
const (
	RewriteOff      = "off"
	RewriteEnvelope = "envelope"
	RewriteFrom     = "from" // envelope and From: header (original kept in Reply-To:)
)

// Account is one Microsoft 365 mailbox the relay signs in as.
type Account struct {
	Name             string `yaml:"name"`
	Provider         string `yaml:"provider"`
	Tenant           string `yaml:"tenant"`
	ClientID         string `yaml:"client_id"`
	ClientSecret     string `yaml:"client_secret" secret:"true"`
	ClientSecretFile string `yaml:"client_secret_file"`
	Flow             string `yaml:"flow"`
	Mailbox          string `yaml:"mailbox"`
	// Senders are envelope-sender patterns routed to this account:
	// "*@contoso.com", "alerts@contoso.com", "*".
	Senders []string `yaml:"senders"`
	// Authority is the Entra ID base URL (tests point it at the fake).
	Authority     string `yaml:"authority"`
	RewriteSender string `yaml:"rewrite_sender"`
	// Protocols the account's token is for: smtp (default), imap, pop3.
	// They decide the scopes a sign-in asks for.
	Protocols []string `yaml:"protocols"`
	// Cloud is the Microsoft cloud the tenant lives in (global, usgov,
	// usgov-dod, china): it sets the Entra authority, the SMTP/IMAP/POP
	// hosts and the resource scopes are named under (providers.go).
	Cloud string `yaml:"cloud"`
	// Kind is mailbox (default) or hve: a Microsoft 365 High Volume
	// Email account, sent through smtp-hve.office365.com with its own
	// limits.
	Kind string `yaml:"kind"`
	// ClientCertificateFile and ClientKeyFile (PEM) sign an app-only
	// account in with a certificate instead of client_secret.
	ClientCertificateFile string `yaml:"client_certificate_file"`
	ClientKeyFile         string `yaml:"client_key_file"`
	// ServiceAccountFile is a Google service account's JSON key (flow
	// service_account: domain-wide delegation, signing in as mailbox).
	ServiceAccountFile string `yaml:"service_account_file"`
	// Upstream is this account's SMTP submission server, host:port; it
	// wins over upstream.addr and over what provider, cloud and kind say.
	Upstream string `yaml:"upstream"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// DefaultAuthority is Entra ID's public cloud.
const DefaultAuthority = "https://login.microsoftonline.com"

// Default returns the configuration used where nothing else is set.
func Default() Config {
	return Config{
		Listen: Listen{
			Addr:            "127.0.0.1:2525",
			Hostname:        "localhost",
			AllowedNetworks: []string{"127.0.0.0/8", "::1/128"},
			MaxMessageBytes: 35 << 20,
			MaxRecipients:   100,
			MaxSessions:     100,
			MaxJunkCommands: 100, // Postfix's smtpd_junk_command_limit
			MaxSessionTime:  time.Hour,
			ReadTimeout:     5 * time.Minute, // RFC 5321 4.5.3.2.7
			WriteTimeout:    5 * time.Minute,
		},
		Admin: Admin{
			Addr: "127.0.0.1:8025",
		},
		Spool: Spool{
			Dir:             "/var/lib/oauthrelay/spool",
			FailedRetention: 7 * 24 * time.Hour,
		},
		Keysafe: Keysafe{
			Path: "/var/lib/oauthrelay/keysafe.bin",
		},
		Tokens: Tokens{
			RefreshSkew:       5 * time.Minute,
			BackgroundRefresh: 24 * time.Hour,
		},
		Delivery: Delivery{
			Workers:               16,
			Connections:           3,
			RatePerMinute:         30,
			MessagesPerConnection: 100,
			IdleTimeout:           60 * time.Second,
			DialTimeout:           30 * time.Second,
			CommandTimeout:        5 * time.Minute,
			Retry: []time.Duration{
				time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute,
				time.Hour, 2 * time.Hour, 4 * time.Hour,
			},
			Jitter: 0.1,
			MaxAge: 5 * 24 * time.Hour, // Postfix's maximal_queue_lifetime
		},
		Upstream: Upstream{
			Addr:     "", // each account's provider, cloud and kind decide (providers.go)
			TLS:      "starttls",
			Hostname: "localhost",
		},
		Inbound: Inbound{
			MaxConnectionsPerAccount: 16,
			LoginCacheTTL:            5 * time.Minute,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// AccountDefaults fills an account's unset optional keys.
func AccountDefaults(a *Account) {
	if a.Provider == "" {
		a.Provider = ProviderMicrosoft
	}
	if a.Provider == ProviderMicrosoft && a.Cloud == "" {
		a.Cloud = CloudGlobal
	}
	if a.Kind == "" {
		a.Kind = KindMailbox
	}
	if a.Flow == "" {
		a.Flow = FlowAuthorizationCode
		if a.Kind == KindHVE {
			a.Flow = FlowClientCredentials // HVE signs in app-only
		}
	}
	if a.Authority == "" {
		a.Authority = a.Profile().Authority
	}
	if a.RewriteSender == "" {
		a.RewriteSender = RewriteOff
	}
	if len(a.Protocols) == 0 {
		a.Protocols = []string{"smtp"}
	}
}
