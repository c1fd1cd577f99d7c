package daemon

import (
	"fmt"
	"net/http"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the relay's Prometheus metrics (names oauthrelay_*). Labels
// carry account names, states, reasons and reply codes — never a secret.
type Metrics struct {
	reg *prometheus.Registry

	sessions    prometheus.Counter
	rejections  *prometheus.CounterVec
	accepted    *prometheus.CounterVec
	acceptedB   *prometheus.CounterVec
	delivered   *prometheus.CounterVec
	deferred    *prometheus.CounterVec
	bounced     *prometheus.CounterVec
	latency     prometheus.Histogram
	replies     *prometheus.CounterVec
	connections *prometheus.CounterVec
	sent        *prometheus.CounterVec
	throttled   *prometheus.CounterVec
	refreshes   *prometheus.CounterVec
	panics      prometheus.Counter

	inboundSessions *prometheus.CounterVec
	inboundLogins   *prometheus.CounterVec
	inboundBytes    *prometheus.CounterVec
}

// NewMetrics registers the metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	m.sessions = prometheus.NewCounter(prometheus.CounterOpts{Name: "oauthrelay_smtp_sessions_total", Help: "SMTP sessions accepted by the listener."})
	m.reg.MustRegister(m.sessions)
	m.rejections = f("oauthrelay_smtp_rejections_total", "SMTP connections, sessions, commands or messages refused, by reason.", "reason")
	for _, r := range relay.RejectionReasons() {
		m.rejections.WithLabelValues(r) // each reason shows from the start, at 0, so rate() sees its first
	}
	m.accepted = f("oauthrelay_messages_accepted_total", "Messages accepted (250 after fsync), by account.", "account")
	m.acceptedB = f("oauthrelay_messages_accepted_bytes_total", "Bytes of messages accepted, by account.", "account")
	m.delivered = f("oauthrelay_messages_delivered_total", "Messages from clients accepted by Microsoft 365, by account (DSNs we send count in messages_bounced and upstream_messages).", "account")
	m.deferred = f("oauthrelay_messages_deferred_total", "Delivery attempts that ended in a temporary failure, by account.", "account")
	m.bounced = f("oauthrelay_messages_bounced_total", "Bounces (DSNs) sent to senders, by account.", "account")
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "oauthrelay_delivery_latency_seconds", Help: "Time from acceptance to Microsoft's 250.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400},
	})
	m.reg.MustRegister(m.latency)
	m.replies = f("oauthrelay_upstream_replies_total", "Replies from Microsoft 365, by code class and enhanced code.", "class", "enhanced")
	m.connections = f("oauthrelay_upstream_connections_total", "relay.Upstream connections opened, by account (messages_sent / connections = reuse).", "account")
	m.sent = f("oauthrelay_upstream_messages_total", "Messages sent upstream and accepted, by account.", "account")
	m.throttled = f("oauthrelay_upstream_throttled_total", "Times Microsoft throttled an account (421 4.4.2, 432 4.3.2).", "account")
	m.refreshes = f("oauthrelay_token_refreshes_total", "Token requests to Entra ID, by account and result (ok, transient, refused).", "account", "result")
	m.inboundSessions = f("oauthrelay_inbound_sessions_total", "IMAP and POP3 sessions relayed to Microsoft 365 after a login, by protocol and account (counted when they end).", "protocol", "account")
	m.inboundBytes = f("oauthrelay_inbound_bytes_total", "Bytes relayed by the IMAP and POP3 proxies, by protocol and direction (in: client to Microsoft 365, out: back), counted when a session ends.", "protocol", "direction")
	m.inboundLogins = f("oauthrelay_inbound_logins_total", "IMAP and POP3 logins, by protocol and result (ok, bad_password, locked_out, not_private, busy, unavailable, refused).", "protocol", "result")
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{Name: "oauthrelay_delivery_panics_total", Help: "Deliveries that panicked (recovered, logged with the stack; the message was deferred). Anything above 0 is a bug: please report it."})
	m.reg.MustRegister(m.panics)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is for tests that read values.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) listenerEvents(next relay.ListenerEvents) relay.ListenerEvents {
	return relay.ListenerEvents{
		Session: func() {
			m.sessions.Inc()
			if next.Session != nil {
				next.Session()
			}
		},
		Rejected: func(reason string) {
			m.rejections.WithLabelValues(reason).Inc()
			if next.Rejected != nil {
				next.Rejected(reason)
			}
		},
		Accepted: func(account string, size int64) {
			m.accepted.WithLabelValues(account).Inc()
			m.acceptedB.WithLabelValues(account).Add(float64(size))
			if next.Accepted != nil {
				next.Accepted(account, size)
			}
		},
	}
}

func (m *Metrics) deliveryEvents(next relay.UpstreamEvents) relay.UpstreamEvents {
	return relay.UpstreamEvents{
		ConnOpened: func(account string) {
			m.connections.WithLabelValues(account).Inc()
			if next.ConnOpened != nil {
				next.ConnOpened(account)
			}
		},
		Reply: func(account string, code int, enhanced string) {
			m.replies.WithLabelValues(fmt.Sprintf("%dxx", code/100), enhanced).Inc()
			if next.Reply != nil {
				next.Reply(account, code, enhanced)
			}
		},
		Throttled: func(account string) {
			m.throttled.WithLabelValues(account).Inc()
			if next.Throttled != nil {
				next.Throttled(account)
			}
		},
		Delivered: func(id, account string, reply queue.Reply, since time.Duration, isBounce bool) {
			m.sent.WithLabelValues(account).Inc()
			if !isBounce { // a DSN was never accepted from a client: it counts as bounced, and sent upstream
				m.delivered.WithLabelValues(account).Inc()
				m.latency.Observe(since.Seconds())
			}
			if next.Delivered != nil {
				next.Delivered(id, account, reply, since, isBounce)
			}
		},
		Deferred: func(account string) {
			m.deferred.WithLabelValues(account).Inc()
			if next.Deferred != nil {
				next.Deferred(account)
			}
		},
		Panicked: func(account string) {
			m.panics.Inc()
			if next.Panicked != nil {
				next.Panicked(account)
			}
		},
	}
}

// stateCollector reads queue and account state at scrape time.
type stateCollector struct {
	q      *queue.Queue
	tok    *tokens.Manager
	depth  *prometheus.Desc
	oldest *prometheus.Desc
	bytes  *prometheus.Desc
	logB   *prometheus.Desc
	up     *prometheus.Desc
	full   *prometheus.Desc
	state  *prometheus.Desc
	expiry *prometheus.Desc
	last   *prometheus.Desc
	cert   *prometheus.Desc
}

func newStateCollector(q *queue.Queue, tok *tokens.Manager) *stateCollector {
	return &stateCollector{q: q, tok: tok,
		depth:  prometheus.NewDesc("oauthrelay_queue_messages", "Messages in the queue, by state and account.", []string{"state", "account"}, nil),
		oldest: prometheus.NewDesc("oauthrelay_queue_oldest_message_age_seconds", "Age of the oldest message waiting for delivery (0 if none).", nil, nil),
		bytes:  prometheus.NewDesc("oauthrelay_spool_bytes", "Bytes of message bodies in the spool (live and failed).", nil, nil),
		logB:   prometheus.NewDesc("oauthrelay_spool_log_bytes", "Bytes of the spool's log segments on disk: live records and garbage not yet reclaimed.", nil, nil),
		up:     prometheus.NewDesc("oauthrelay_upstream_up", "1 while Microsoft 365 can be reached, 0 during an outage (mail is held and the upstream probed).", nil, nil),
		full:   prometheus.NewDesc("oauthrelay_spool_disk_full", "1 while the spool's disk is full (new mail refused with 452 4.3.1, queued mail still delivered).", nil, nil),
		state:  prometheus.NewDesc("oauthrelay_account_state", "1 for the account's current state (connected, needs_reconnect, misconfigured, not_connected, smtp_auth_disabled, smtp_auth_refused).", []string{"account", "state"}, nil),
		expiry: prometheus.NewDesc("oauthrelay_access_token_expiry_timestamp_seconds", "When the account's current access token expires (Unix time).", []string{"account"}, nil),
		last:   prometheus.NewDesc("oauthrelay_refresh_token_last_refresh_timestamp_seconds", "When the account's refresh token was last used or renewed (Unix time).", []string{"account"}, nil),
		cert:   prometheus.NewDesc("oauthrelay_client_certificate_expiry_timestamp_seconds", "When the client certificate of an app-only account expires (Unix time); alert well before it: oauthrelay warns 30 days ahead.", []string{"account"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.depth, c.oldest, c.bytes, c.logB, c.up, c.full, c.state, c.expiry, c.last, c.cert} {
		ch <- d
	}
}

var allAccountStates = []tokens.State{tokens.Connected, tokens.NeedsReconnect, tokens.Misconfigured, tokens.NotConnected, tokens.SMTPAuthDisabled, tokens.SMTPAuthRefused}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.q.Stats()
	accounts := c.tok.States()
	for _, a := range accounts {
		for _, s := range queue.MessageStates() {
			ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(st.ByAccount[a.Account][s]), string(s), a.Account)
		}
		for _, s := range allAccountStates {
			v := 0.0
			if a.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, a.Account, string(s))
		}
		if !a.AccessExpiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(a.AccessExpiry.Unix()), a.Account)
		}
		if !a.LastRefresh.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, float64(a.LastRefresh.Unix()), a.Account)
		}
		if !a.CertificateExpiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.cert, prometheus.GaugeValue, float64(a.CertificateExpiry.Unix()), a.Account)
		}
	}
	age := 0.0
	if !st.Oldest.IsZero() {
		age = time.Since(st.Oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(c.logB, prometheus.GaugeValue, float64(st.LogBytes))
	up, full := 1.0, 0.0
	if st.UpstreamDown != "" {
		up = 0
	}
	if _, f := c.q.DiskFull(); f {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.full, prometheus.GaugeValue, full)
}
