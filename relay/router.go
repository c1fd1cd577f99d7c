package relay

import (
	"strings"
)

// Route is one account's sender patterns.
type Route struct {
	Account string
	// Patterns: "user@domain", "*@domain", "*@*.domain" or "*".
	Patterns []string
}

// Router picks the account for an envelope sender: the first route with a
// matching pattern wins. A sender no route matches is refused, so the relay
// is never an open relay.
type Router struct {
	routes []Route
}

// NewRouter returns a Router over routes, in order.
func NewRouter(routes []Route) *Router {
	return &Router{routes: routes}
}

// Route returns the account for sender (the zero Address is the null
// sender, matched only by "*"), and whether one matched. It compares the
// parsed parts, so an "@domain" inside a quoted local part routes nothing.
// The listener routes mail from the null sender by its From: header when
// it has a NullSenderAccount to fall back on (nullsender.go).
func (r *Router) Route(sender Address) (string, bool) {
	local, domain := strings.ToLower(sender.Local), strings.ToLower(sender.Domain)
	for _, rt := range r.routes {
		for _, p := range rt.Patterns {
			if p == "*" {
				return rt.Account, true
			}
			if sender.IsNull() {
				continue
			}
			pl, pd, _ := strings.Cut(strings.ToLower(p), "@")
			if (pl == "*" || pl == local) && domainMatch(pd, domain) {
				return rt.Account, true
			}
		}
	}
	return "", false
}

func domainMatch(pattern, domain string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(domain, "."+rest)
	}
	return pattern == domain
}
