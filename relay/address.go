package relay

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Address is an envelope mailbox (RFC 5321 4.1.2 Mailbox). The zero
// Address is the null reverse-path <>.
//
// Local is the local part's content, without quotes: it holds only
// characters that need no quoted-pair, so String can always write it back.
// Domain is a domain name or an address literal in brackets, as the client
// wrote it.
type Address struct {
	Local  string
	Domain string
}

// maxPath is RFC 5321 4.5.3.1.3's limit on a path, "<" and ">" included.
// The local part gets no limit of its own: VERP and tracking addresses
// exceed the 64 octets of 4.5.3.1.1 and work everywhere.
const maxPath = 256

const tooLong = "longer than 256 octets with its angle brackets (RFC 5321 4.5.3.1.3)"

// IsNull reports whether a is the null reverse-path <>.
func (a Address) IsNull() bool { return a == Address{} }

// String is the address as it is stored and sent upstream: the local part
// as a Dot-string where it is one, else as a Quoted-string. The result
// never holds a control character, and a space or '<' / '>' only inside
// the quotes.
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	if isDotString(a.Local) {
		return a.Local + "@" + a.Domain
	}
	return `"` + a.Local + `"@` + a.Domain
}

// IsASCII reports whether a needs no SMTPUTF8.
func (a Address) IsASCII() bool { return isASCII(a.Local) && isASCII(a.Domain) }

// addressError says what is wrong with an address; the SMTP reply depends
// on the command, so this carries only the words and the kind.
type addressError struct {
	msg string
	// nonASCII: the address is fine but for UTF-8 without SMTPUTF8.
	nonASCII bool
}

func (e *addressError) Error() string { return e.msg }

func addrErr(msg string) *addressError { return &addressError{msg: msg} }

// ParseAddress parses a whole mailbox without angle brackets, as String
// writes it (the form the queue stores). smtputf8 allows non-ASCII (RFC 6531).
func ParseAddress(s string, smtputf8 bool) (Address, error) {
	a, rest, err := parseMailbox(s, smtputf8)
	if err != nil {
		return Address{}, err
	}
	if rest != "" {
		return Address{}, addrErr("unexpected characters after the domain")
	}
	if len(a.String())+2 > maxPath {
		return Address{}, addrErr(tooLong)
	}
	return a, nil
}

// parsePath parses the path at the start of a MAIL FROM: or RCPT TO:
// argument (RFC 5321 4.1.2): "<" [ A-d-l ":" ] Mailbox ">", or "<>" where
// null is allowed. A source route is accepted and dropped (RFC 5321 C);
// a path without angle brackets is read up to the first space, as lenient
// servers do. It returns the address and what follows the path.
func parsePath(s string, null, smtputf8 bool) (Address, string, *addressError) {
	if !strings.HasPrefix(s, "<") {
		a, rest, err := parseMailbox(s, smtputf8)
		if err != nil {
			return Address{}, "", err
		}
		if rest != "" && rest[0] != ' ' {
			return Address{}, "", addrErr("unexpected characters after the domain")
		}
		if len(a.String())+2 > maxPath {
			return Address{}, "", addrErr(tooLong)
		}
		return a, rest, nil
	}
	if rest, ok := strings.CutPrefix(s, "<>"); ok {
		if !null {
			return Address{}, "", addrErr("the null path <> is not a recipient")
		}
		return Address{}, rest, nil
	}
	in := s[1:]
	if strings.HasPrefix(in, "@") { // A-d-l: "@" Domain *( "," "@" Domain ) ":"
		i := strings.IndexByte(in, ':')
		if i < 0 {
			return Address{}, "", addrErr("source route without ':'")
		}
		for _, hop := range strings.Split(in[:i], ",") {
			d, ok := strings.CutPrefix(hop, "@")
			if !ok || !isDomain(d, false) {
				return Address{}, "", addrErr("malformed source route")
			}
		}
		in = in[i+1:]
	}
	a, rest, err := parseMailbox(in, smtputf8)
	if err != nil {
		return Address{}, "", err
	}
	if !strings.HasPrefix(rest, ">") {
		return Address{}, "", addrErr("missing '>' after the domain")
	}
	if len(a.String())+2 > maxPath {
		return Address{}, "", addrErr(tooLong)
	}
	return a, rest[1:], nil
}

// parseMailbox reads Local-part "@" ( Domain / address-literal ) at the
// start of s and returns what follows.
func parseMailbox(s string, smtputf8 bool) (Address, string, *addressError) {
	var a Address
	var rest string
	var err *addressError
	if strings.HasPrefix(s, `"`) {
		a.Local, rest, err = parseQuoted(s[1:], smtputf8)
	} else {
		a.Local, rest, err = parseDotString(s, smtputf8)
	}
	if err != nil {
		return Address{}, "", err
	}
	if a.Local == "" {
		return Address{}, "", addrErr("empty local part")
	}
	rest, ok := strings.CutPrefix(rest, "@")
	if !ok {
		if rest == "" || rest[0] == '>' {
			return Address{}, "", addrErr("no '@' and domain")
		}
		return Address{}, "", charErr(rest, "in the local part")
	}
	end := strings.IndexAny(rest, "> ")
	if end < 0 {
		end = len(rest)
	}
	if end > maxPath {
		return Address{}, "", addrErr(tooLong)
	}
	a.Domain, rest = rest[:end], rest[end:]
	if a.Domain == "" {
		return Address{}, "", addrErr("empty domain")
	}
	if !isASCII(a.Domain) && !smtputf8 {
		return Address{}, "", &addressError{msg: "non-ASCII domain without SMTPUTF8", nonASCII: true}
	}
	if strings.HasPrefix(a.Domain, "[") {
		if !isAddressLiteral(a.Domain) {
			return Address{}, "", addrErr("malformed address literal " + visible(a.Domain))
		}
	} else if !isDomain(a.Domain, smtputf8) {
		return Address{}, "", addrErr("malformed domain " + visible(a.Domain))
	}
	return a, rest, nil
}

// parseDotString reads a Dot-string local part. Dots are allowed anywhere
// ("a..b", ".a"): some real mailboxes have them, and a dot can inject
// nothing.
func parseDotString(s string, smtputf8 bool) (string, string, *addressError) {
	i := 0
	for i < len(s) {
		if i > maxPath {
			return "", "", addrErr(tooLong)
		}
		c := s[i]
		if c < utf8RuneSelf {
			if c != '.' && !isAtext(c) {
				break
			}
			i++
			continue
		}
		n, err := localUTF8(s[i:], smtputf8)
		if err != nil {
			return "", "", err
		}
		i += n
	}
	return s[:i], s[i:], nil
}

// localUTF8 reads one non-ASCII character at the start of s, in a local
// part (dot-string or quoted): valid UTF-8, a character RFC 6531 allows,
// and only with SMTPUTF8. It returns the character's length.
func localUTF8(s string, smtputf8 bool) (int, *addressError) {
	r, n := decodeRune(s)
	if r == utf8.RuneError {
		return 0, addrErr("invalid UTF-8 in the local part")
	}
	if !utf8Allowed(r) {
		return 0, charErr(s, "in the local part")
	}
	if !smtputf8 {
		return 0, &addressError{msg: "non-ASCII local part without SMTPUTF8", nonASCII: true}
	}
	return n, nil
}

// parseQuoted reads a Quoted-string's content after its opening quote. A
// quoted-pair is taken for the character it quotes; the content may hold
// only qtextSMTP (RFC 5321 4.1.2), so '"' and '\' are refused even quoted:
// no mailbox needs them, and without them the stored form needs no escapes.
func parseQuoted(s string, smtputf8 bool) (string, string, *addressError) {
	var b strings.Builder
	for i := 0; i < len(s); {
		if i > maxPath {
			return "", "", addrErr(tooLong)
		}
		c := s[i]
		switch {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\':
			if i+1 == len(s) {
				return "", "", addrErr("unterminated quoted local part")
			}
			q := s[i+1]
			if q == '"' || q == '\\' {
				return "", "", addrErr(`'"' or '\' in a quoted local part`)
			}
			if !isQtext(q) {
				return "", "", charErr(s[i+1:], "in the local part")
			}
			b.WriteByte(q)
			i += 2
		case c < utf8RuneSelf:
			if !isQtext(c) {
				return "", "", charErr(s[i:], "in the local part")
			}
			b.WriteByte(c)
			i++
		default:
			n, err := localUTF8(s[i:], smtputf8)
			if err != nil {
				return "", "", err
			}
			b.WriteString(s[i : i+n])
			i += n
		}
	}
	return "", "", addrErr("unterminated quoted local part")
}

const utf8RuneSelf = 0x80

func decodeRune(s string) (rune, int) { return utf8.DecodeRuneInString(s) }

// utf8Allowed is the non-ASCII a local part may hold with SMTPUTF8:
// visible characters, never a space, separator or format control (which
// could break a header line the address is written into).
func utf8Allowed(r rune) bool {
	return unicode.IsGraphic(r) && !unicode.IsSpace(r)
}

// isAtext: RFC 5322 atext, the characters of a Dot-string's atoms.
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isQtext: qtextSMTP, %d32-33 / %d35-91 / %d93-126.
func isQtext(c byte) bool { return c >= 32 && c <= 126 && c != '"' && c != '\\' }

// isDotString reports whether a non-empty local part can be written
// without quotes: atext and dots only (and non-ASCII, under SMTPUTF8).
func isDotString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < utf8RuneSelf && c != '.' && !isAtext(c) {
			return false
		}
	}
	return true
}

// isDomain: sub-domain *("." sub-domain), each a letter-digit-hyphen label
// of at most 63 octets not starting or ending with '-' (RFC 5321 4.1.2,
// RFC 1035 2.3.4); under SMTPUTF8 a label may hold letters, marks and
// digits of any script (U-labels, not checked against IDNA2008).
func isDomain(d string, smtputf8 bool) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			switch {
			case r < utf8RuneSelf:
				if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-') {
					return false
				}
			case !smtputf8 || r == utf8.RuneError:
				return false
			case !unicode.In(r, unicode.L, unicode.M, unicode.N):
				return false
			}
		}
	}
	return true
}

// isAddressLiteral: "[" IPv4 "]" or "[IPv6:" IPv6 "]" (RFC 5321 4.1.3).
// General-address-literals are refused: nothing routes them.
func isAddressLiteral(d string) bool {
	in, ok := strings.CutPrefix(d, "[")
	if !ok {
		return false
	}
	in, ok = strings.CutSuffix(in, "]")
	if !ok {
		return false
	}
	if v6, ok := cutPrefixFold(in, "IPv6:"); ok {
		ip, err := netip.ParseAddr(v6)
		return err == nil && ip.Is6() && ip.Zone() == ""
	}
	ip, err := netip.ParseAddr(in)
	return err == nil && ip.Is4()
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8RuneSelf {
			return false
		}
	}
	return true
}

// charErr names the character that stopped the parse.
func charErr(at, where string) *addressError {
	if at == "" {
		return addrErr("unexpected end " + where)
	}
	r, _ := decodeRune(at)
	switch {
	case r == ' ':
		return addrErr("space " + where + " (quote the local part)")
	case r == utf8.RuneError:
		return addrErr("invalid UTF-8 " + where)
	case r < 32 || r == 127 || !unicode.IsGraphic(r) || unicode.IsSpace(r):
		return addrErr(fmt.Sprintf("control or space character %U %s", r, where))
	case r >= utf8RuneSelf:
		return addrErr(fmt.Sprintf("character %U %s", r, where))
	}
	return addrErr("'" + string(r) + "' " + where)
}

// visible shows s in a reply or log line: quoted, ASCII, at most 64
// octets of it.
func visible(s string) string {
	if len(s) > 64 {
		s = strings.ToValidUTF8(s[:64], "") + "…"
	}
	return strconv.QuoteToASCII(s)
}

// upstreamPath is a stored address as it may go into a MAIL or RCPT
// command upstream: parsed again, so an address queued before it was
// checked (or a damaged record) cannot carry anything but one path.
func upstreamPath(stored string, smtputf8 bool) (string, error) {
	a, err := ParseAddress(stored, smtputf8)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}
