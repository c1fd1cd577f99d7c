package relay

import (
	"bytes"
	"io"
	"net/mail"
	"slices"
	"strings"
)

// Mail from the null sender <> — bounces and DSNs a satellite MTA sends
// (RFC 5321 4.5.5) — has no envelope sender to route by. It is accepted
// from any client that may send (allowed network, AUTH as required) and
// routed by its From: header once DATA has brought it: the account a
// route gives that address, else ListenerConfig.NullSenderAccount. It goes
// upstream with the account's mailbox as its envelope sender (Upstream
// does so for every null sender), so it is never sent as <>.

// maxNullSenderHeader bounds what is read of a null-sender message before
// it is routed; a From: further down is not looked for.
const maxNullSenderHeader = 64 << 10

// routeNullSender reads the header of a message from <> and picks its
// account. It returns what it read, which the queued message must start
// with, and how the account was chosen.
func (s *session) routeNullSender(r io.Reader) (head []byte, account, by string) {
	head = readHeader(r, maxNullSenderHeader)
	if from, ok := headerFrom(head); ok {
		if account, ok := s.l.router.Route(from); ok {
			return head, account, "From: header"
		}
	}
	return head, s.l.cfg.NullSenderAccount, "listen.null_sender_account"
}

// readHeader reads r until the blank line that ends the header (r gives
// CRLF line ends), limit octets, or an error, which r gives again on the
// next read.
func readHeader(r io.Reader, limit int) []byte {
	buf := make([]byte, 0, min(limit, 8<<10))
	for len(buf) < limit && headerEnd(buf) < 0 {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(len(buf), limit-len(buf)))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if err != nil {
			break
		}
	}
	return buf
}

// headerEnd is the length of the header in b, blank line included, or -1
// if b does not hold all of it.
func headerEnd(b []byte) int {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 2 // no header at all
	}
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return -1
}

// headerFrom is the address of the first mailbox in the first From: field
// of head (RFC 5322 3.6.2), as an envelope address to route by.
func headerFrom(head []byte) (Address, bool) {
	if n := headerEnd(head); n >= 0 {
		head = head[:n]
	} else if i := bytes.LastIndex(head, []byte("\r\n")); i >= 0 {
		head = head[:i+2] // whole lines only: a cut address would route wrongly
	} else {
		return Address{}, false
	}
	var value string
	found := false
	for _, line := range strings.Split(string(head), "\r\n") {
		if found {
			if line != "" && (line[0] == ' ' || line[0] == '\t') {
				value += line // unfolding (RFC 5322 2.2.3)
				continue
			}
			break
		}
		name, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimRight(name, " \t"), "From") {
			value, found = v, true
		}
	}
	if !found {
		return Address{}, false
	}
	list, err := mail.ParseAddressList(value)
	if err != nil || len(list) == 0 {
		return Address{}, false
	}
	a, err := ParseAddress(list[0].Address, true)
	return a, err == nil
}
