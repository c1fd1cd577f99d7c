// Package configs holds oauthrelay's typed configuration: the Config struct,
// its defaults, loading (viper: defaults < YAML file < OAUTHRELAY_* environment
// < command-line flags), secret resolution (${VAR} expansion and *_file keys)
// and validation that reports every problem at once, each naming its key and
// the fix. The example files in this folder are loaded by a test.
//
// configs is a leaf: it never reaches the network and imports no other
// package of this module.
package configs

import "time"

// Config is the whole configuration of one oauthrelay instance.
type Config struct {
	Listen   Listen    `mapstructure:"listen"`
	Admin    Admin     `mapstructure:"admin"`
	Spool    Spool     `mapstructure:"spool"`
	Keysafe  Keysafe   `mapstructure:"keysafe"`
	Tokens   Tokens    `mapstructure:"tokens"`
	Delivery Delivery  `mapstructure:"delivery"`
	Upstream Upstream  `mapstructure:"upstream"`
	Accounts []Account `mapstructure:"accounts"`
	Log      Log       `mapstructure:"log"`
	Alert    Alert     `mapstructure:"alert"`
}

// Alert configures notifications about accounts.
type Alert struct {
	// WebhookURL receives a JSON POST when an account needs attention and
	// when it recovers.
	WebhookURL string `mapstructure:"webhook_url" secret:"true"`
}

// Listen configures the SMTP listener the applications talk to.
type Listen struct {
	// Addr is host:port of the SMTP listener.
	Addr string `mapstructure:"addr"`
	// Hostname is the name used in the greeting and the Received: header.
	Hostname string `mapstructure:"hostname"`
	// AllowedNetworks lists the CIDRs (or single addresses) that may connect.
	AllowedNetworks []string `mapstructure:"allowed_networks"`
	// MaxMessageBytes is advertised with SIZE and enforced.
	MaxMessageBytes int64 `mapstructure:"max_message_bytes"`
	// MaxRecipients per message. RFC 5321 4.5.3.1.8: at least 100.
	MaxRecipients int `mapstructure:"max_recipients"`
	// MaxSessions caps concurrent SMTP sessions; more get 421 4.7.0.
	MaxSessions  int           `mapstructure:"max_sessions"`
	ReadTimeout  time.Duration `mapstructure:"read_timeout"`
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	TLS          ListenTLS     `mapstructure:"tls"`
	Auth         ListenAuth    `mapstructure:"auth"`
}

// ListenTLS enables STARTTLS on the listener when both files are set.
type ListenTLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// ListenAuth configures optional client authentication (PLAIN/LOGIN).
type ListenAuth struct {
	// UsersFile holds "user:bcrypt-hash" lines.
	UsersFile string `mapstructure:"users_file"`
	// Required makes MAIL without AUTH fail with 530 5.7.0.
	Required bool `mapstructure:"required"`
}

// Admin configures the admin HTTP server (Connect page, API, metrics).
type Admin struct {
	Addr string `mapstructure:"addr"`
	// PublicURL is how a browser reaches the admin server; the OAuth
	// redirect URI is PublicURL + "/oauth/callback".
	PublicURL string `mapstructure:"public_url"`
	Token     string `mapstructure:"token" secret:"true"`
	TokenFile string `mapstructure:"token_file"`
}

// Spool configures the on-disk queue.
type Spool struct {
	Dir string `mapstructure:"dir"`
	// FailedRetention is how long permanently failed messages stay in failed/.
	FailedRetention time.Duration `mapstructure:"failed_retention"`
}

// Keysafe configures the encrypted token store.
type Keysafe struct {
	Path string `mapstructure:"path"`
	// Key is a base64 AES-256 key (32 bytes); usually ${OAUTHRELAY_KEYSAFE_KEY}.
	Key     string `mapstructure:"key" secret:"true"`
	KeyFile string `mapstructure:"key_file"`
}

// Tokens configures access-token caching and background refresh.
type Tokens struct {
	// RefreshSkew: an access token is renewed this long before it expires.
	RefreshSkew time.Duration `mapstructure:"refresh_skew"`
	// BackgroundRefresh renews every delegated refresh token this often so
	// Microsoft's 90-day inactivity expiry never hits a quiet relay.
	BackgroundRefresh time.Duration `mapstructure:"background_refresh"`
}

// Delivery configures upstream delivery and retries.
type Delivery struct {
	// Workers is how many messages are delivered at once over all accounts.
	Workers int `mapstructure:"workers"`
	// Connections per account (Microsoft allows 3 per mailbox).
	Connections int `mapstructure:"connections"`
	// RatePerMinute per account (Microsoft: 30 per mailbox); 0 = unlimited.
	RatePerMinute float64 `mapstructure:"rate_per_minute"`
	// MessagesPerConnection before a connection is closed and a new one made.
	MessagesPerConnection int           `mapstructure:"messages_per_connection"`
	IdleTimeout           time.Duration `mapstructure:"idle_timeout"`
	DialTimeout           time.Duration `mapstructure:"dial_timeout"`
	CommandTimeout        time.Duration `mapstructure:"command_timeout"`
	// Retry is the delay after each failed attempt; the last repeats.
	Retry []time.Duration `mapstructure:"retry"`
	// Jitter spreads each delay by ± this fraction.
	Jitter float64 `mapstructure:"jitter"`
	// MaxAge after which pending recipients fail with 4.4.7.
	MaxAge time.Duration `mapstructure:"max_age"`
}

// Upstream is the Microsoft 365 submission server.
type Upstream struct {
	Addr string `mapstructure:"addr"`
	// TLS is "starttls" (port 587) or "implicit" (port 465).
	TLS string `mapstructure:"tls"`
	// Hostname is sent with EHLO.
	Hostname string `mapstructure:"hostname"`
	// CAFile adds a CA to the system roots (tests, TLS-inspecting proxies).
	CAFile string `mapstructure:"ca_file"`
	// InsecureAllowPlaintext sends bearer tokens without TLS. Tests only.
	InsecureAllowPlaintext bool `mapstructure:"insecure_allow_plaintext"`
}

// Flow names.
const (
	FlowAuthorizationCode = "authorization_code"
	FlowDeviceCode        = "device_code"
	FlowClientCredentials = "client_credentials"
)

// Sender rewriting modes.
const (
	RewriteOff      = "off"
	RewriteEnvelope = "envelope"
	RewriteFrom     = "from" // envelope and From: header (original kept in Reply-To:)
)

// Account is one Microsoft 365 mailbox the relay signs in as.
type Account struct {
	Name             string `mapstructure:"name"`
	Provider         string `mapstructure:"provider"`
	Tenant           string `mapstructure:"tenant"`
	ClientID         string `mapstructure:"client_id"`
	ClientSecret     string `mapstructure:"client_secret" secret:"true"`
	ClientSecretFile string `mapstructure:"client_secret_file"`
	Flow             string `mapstructure:"flow"`
	Mailbox          string `mapstructure:"mailbox"`
	// Senders are envelope-sender patterns routed to this account:
	// "*@contoso.com", "alerts@contoso.com", "*".
	Senders []string `mapstructure:"senders"`
	// Authority is the Entra ID base URL (tests point it at the fake).
	Authority     string `mapstructure:"authority"`
	RewriteSender string `mapstructure:"rewrite_sender"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
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
			Addr:     "smtp.office365.com:587",
			TLS:      "starttls",
			Hostname: "localhost",
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// AccountDefaults fills an account's unset optional keys.
func AccountDefaults(a *Account) {
	if a.Provider == "" {
		a.Provider = "microsoft"
	}
	if a.Flow == "" {
		a.Flow = FlowAuthorizationCode
	}
	if a.Authority == "" {
		a.Authority = DefaultAuthority
	}
	if a.RewriteSender == "" {
		a.RewriteSender = RewriteOff
	}
}
