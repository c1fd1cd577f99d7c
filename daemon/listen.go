package daemon

import "net"

// UseInboundListeners makes StartWith serve IMAP and POP3 on listeners the
// caller opened (tests, which need the ports before the relay starts); call
// it before StartWith. A nil listener leaves that proxy off. Without
// inbound.* in the configuration (r.Inbound nil) it does nothing.
func (r *Relay) UseInboundListeners(imap, pop3 net.Listener) {
	if r.Inbound == nil {
		return
	}
	r.imapLn, r.pop3Ln = imap, pop3
}
