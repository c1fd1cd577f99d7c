package daemon

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/inbound"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/prometheus/client_golang/prometheus"
)

// newInbound builds the IMAP and POP3 proxies: local users from
// inbound.users_file, the SMTP listener's allowed networks, the upstream's
// trust (system roots plus upstream.ca_file).
func newInbound(c *configs.Config, lc relay.ListenerConfig, uc relay.UpstreamConfig, toks *tokens.Manager, m *Metrics, log *slog.Logger) (*inbound.Server, error) {
	mailboxes := map[string]string{}
	for _, a := range c.Accounts {
		mailboxes[a.Name] = a.Mailbox
	}
	users, err := inbound.LoadUsers(c.Inbound.UsersFile, mailboxes)
	if err != nil {
		return nil, err
	}
	// A delegated sign-in grants only the protocols the account lists.
	for _, a := range c.Accounts {
		if !slices.Contains(users.Accounts(), a.Name) || a.Flow == configs.FlowClientCredentials {
			continue
		}
		for _, p := range []struct{ name, addr string }{{inbound.IMAP, c.Inbound.IMAP.Addr}, {inbound.POP3, c.Inbound.POP3.Addr}} {
			if p.addr != "" && !slices.Contains(a.Protocols, p.name) {
				log.Warn("inbound: an account used by inbound.users_file lacks a protocol in accounts[].protocols; its sign-in may not grant it (add it, then Connect again)",
					"account", a.Name, "protocol", p.name)
			}
		}
	}
	if lc.TLS == nil {
		for _, addr := range []string{c.Inbound.IMAP.Addr, c.Inbound.POP3.Addr} {
			if addr != "" && !loopbackAddr(addr) {
				log.Warn("inbound: listening beyond loopback without listen.tls: apps on other hosts can connect but not log in (no STARTTLS/STLS without a certificate)", "addr", addr)
			}
		}
	}
	for _, p := range []string{inbound.IMAP, inbound.POP3} {
		for _, r := range inbound.LoginResults() {
			m.inboundLogins.WithLabelValues(p, r) // each shows from the start, at 0
		}
	}
	srv := inbound.New(inbound.Options{
		Users: users, Tokens: toks, AllowedNetworks: lc.AllowedNetworks,
		IMAPUpstream: c.Inbound.IMAP.Upstream, POP3Upstream: c.Inbound.POP3.Upstream, RootCAs: uc.RootCAs,
		UpstreamFor: func(account, protocol string) string {
			for i := range c.Accounts {
				if a := &c.Accounts[i]; a.Name == account {
					if protocol == inbound.IMAP {
						return c.IMAPUpstream(a)
					}
					return c.POP3Upstream(a)
				}
			}
			return ""
		},
		TLS:                      lc.TLS, // STARTTLS and STLS with listen.tls's certificate
		MaxConnectionsPerAccount: c.Inbound.MaxConnectionsPerAccount,
		LoginCacheTTL:            loginCacheTTL(c.Inbound.LoginCacheTTL),
		DialTimeout:              c.Delivery.DialTimeout,
		Events: inbound.Events{
			Login: func(protocol, result string) { m.inboundLogins.WithLabelValues(protocol, result).Inc() },
			Session: func(s inbound.Session) {
				m.inboundSessions.WithLabelValues(s.Protocol, s.Account).Inc()
				m.inboundBytes.WithLabelValues(s.Protocol, "in").Add(float64(s.BytesIn))
				m.inboundBytes.WithLabelValues(s.Protocol, "out").Add(float64(s.BytesOut))
			},
		},
		Logger: log,
	})
	m.reg.MustRegister(openSessions{srv.Sessions})
	return srv, nil
}

// openSessions is the gauge oauthrelay_inbound_sessions_open{protocol,
// account}: the sessions relayed now, read from the server at each scrape
// (so an alert can fire before an account reaches its cap).
type openSessions struct {
	get func() map[string]map[string]int
}

var openSessionsDesc = prometheus.NewDesc("oauthrelay_inbound_sessions_open",
	"IMAP and POP3 sessions relayed to the upstream now, by protocol and account (inbound.max_connections_per_account caps each account's).",
	[]string{"protocol", "account"}, nil)

func (o openSessions) Describe(ch chan<- *prometheus.Desc) { ch <- openSessionsDesc }

func (o openSessions) Collect(ch chan<- prometheus.Metric) {
	for account, byProto := range o.get() {
		for proto, n := range byProto {
			ch <- prometheus.MustNewConstMetric(openSessionsDesc, prometheus.GaugeValue, float64(n), proto, account)
		}
	}
}

func (r *Relay) serveIMAP(ln net.Listener) error { return r.Inbound.ServeIMAP(ln) }
func (r *Relay) servePOP3(ln net.Listener) error { return r.Inbound.ServePOP3(ln) }

// IMAPAddr is where the IMAP proxy listens (after Start), "" when off.
func (r *Relay) IMAPAddr() string { return lnAddr(r.imapLn) }

// POP3Addr is where the POP3 proxy listens (after Start), "" when off.
func (r *Relay) POP3Addr() string { return lnAddr(r.pop3Ln) }

// loopbackAddr reports whether host:port listens on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func lnAddr(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// loginCacheTTL maps inbound.login_cache_ttl to inbound.Options (where 0
// is the default and a negative value turns the cache off).
func loginCacheTTL(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
