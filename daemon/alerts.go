package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// webhook posts alerts as JSON to url, in order, from one goroutine (a
// slow endpoint never blocks the relay; past 64 pending alerts new ones
// are dropped with a log line). stop ends it.
func webhook(url string, log *slog.Logger) (post func(account string, payload map[string]any), stop func()) {
	client := &http.Client{Timeout: 10 * time.Second}
	pending := make(chan []byte, 64)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case body := <-pending:
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					log.Warn("alert webhook failed", "error", err.Error())
					continue
				}
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					log.Warn("alert webhook refused", "status", resp.StatusCode)
				}
			}
		}
	}()
	post = func(account string, payload map[string]any) {
		payload["time"] = time.Now().UTC().Format(time.RFC3339)
		body, _ := json.Marshal(payload)
		select {
		case pending <- body:
		default:
			log.Warn("alert webhook backlog full; alert dropped", "account", account, "event", payload["event"])
		}
	}
	var once sync.Once
	return post, func() { once.Do(func() { close(done) }) }
}

// stateAlert is the webhook's payload for an account's change of state.
func stateAlert(s tokens.AccountState, publicURL string) map[string]any {
	return map[string]any{
		"event":   "account_state",
		"account": s.Account, "mailbox": s.Mailbox, "state": s.State,
		"needs_attention": s.State != tokens.Connected,
		"explanation":     s.Explanation, "connect_url": tokens.ConnectURL(publicURL, s.Account),
	}
}

// certificateAlert is the webhook's payload for a client certificate that
// expires soon, or has expired.
func certificateAlert(s tokens.AccountState, publicURL string) map[string]any {
	return map[string]any{
		"event":   "certificate_expires_soon",
		"account": s.Account, "mailbox": s.Mailbox, "state": s.State,
		"needs_attention":    true,
		"certificate_expiry": s.CertificateExpiry.UTC().Format(time.RFC3339),
		"explanation":        tokens.Explanation{Title: s.CertificateWarning},
		"status_url":         publicURL + "/#account-" + s.Account,
	}
}

// certificateAlerts warns about client certificates that expire soon
// (tokens.AccountState.CertificateWarning): in the log and through the
// webhook, at start and then at most once a day per account.
type certificateAlerts struct {
	tokens *tokens.Manager
	log    *slog.Logger
	notify func(tokens.AccountState) // the webhook; nil without one
	now    func() time.Time
	// check is how often the accounts are looked at (default 1 h);
	// repeat the least time between two warnings about one account
	// (default 24 h).
	check, repeat time.Duration

	last map[string]time.Time
}

func (c *certificateAlerts) run(ctx context.Context) {
	if c.check <= 0 {
		c.check = time.Hour
	}
	t := time.NewTicker(c.check)
	defer t.Stop()
	for {
		for _, s := range c.due(c.tokens.States(), c.now()) {
			c.log.Warn("oauthrelay: "+s.CertificateWarning, "account", s.Account, "certificate_expiry", s.CertificateExpiry.UTC().Format(time.RFC3339))
			if c.notify != nil {
				c.notify(s)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// due returns the accounts to warn about now, and notes that they were.
func (c *certificateAlerts) due(states []tokens.AccountState, now time.Time) []tokens.AccountState {
	if c.repeat <= 0 {
		c.repeat = 24 * time.Hour
	}
	if c.last == nil {
		c.last = map[string]time.Time{}
	}
	var out []tokens.AccountState
	for _, s := range states {
		if s.CertificateWarning == "" {
			continue
		}
		if last, ok := c.last[s.Account]; ok && now.Sub(last) < c.repeat {
			continue
		}
		c.last[s.Account] = now
		out = append(out, s)
	}
	return out
}
