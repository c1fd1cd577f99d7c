package inbound

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// The IMAP proxy (RFC 3501, RFC 9051). Before login it answers CAPABILITY,
// NOOP, LOGOUT, ID (RFC 2971), LOGIN and AUTHENTICATE PLAIN (RFC 4616, with
// SASL-IR, RFC 4959) itself, and refuses everything else; the client's
// password never goes upstream.

const (
	// imapMaxLine bounds a command line before login; imapMaxLiteral a
	// literal (a user name or password).
	imapMaxLine    = 8 << 10
	imapMaxLiteral = 8 << 10
	// imapMaxBad ends a session after this many refused or failed commands
	// before login.
	imapMaxBad = 20
	// imapUpTag tags the relay's own commands upstream; the client's tags
	// are used only after login, when the relay no longer reads replies.
	imapUpTag = "oauthrelay1"
)

// maxLoginFailures ends a session (IMAP or POP3) after this many wrong
// passwords; the address's lockout counts on across sessions.
const maxLoginFailures = 3

type imapConn struct {
	s        *Server
	c        net.Conn // the TLS connection after STARTTLS
	r        *lineReader
	ip       netip.Addr
	loopback bool
	rel      *relay // set by a login that succeeded
	secure   bool   // STARTTLS done
}

// private reports whether a password may be sent: on loopback, or after
// STARTTLS (the rule of SMTP AUTH on listen.addr).
func (ic *imapConn) private() bool { return ic.loopback || ic.secure }

// caps are the capabilities before login. Without a private connection
// there is no login: RFC 3501 6.2.3 LOGINDISABLED, and no AUTH=
// mechanisms. STARTTLS is offered when listen.tls has a certificate.
func (ic *imapConn) caps() string {
	caps := "IMAP4rev1"
	if ic.s.opts.TLS != nil && !ic.secure {
		caps += " STARTTLS"
	}
	if ic.private() {
		caps += " AUTH=PLAIN SASL-IR"
	} else {
		caps += " LOGINDISABLED"
	}
	return caps + " ID"
}

func (ic *imapConn) write(format string, args ...any) error {
	_, err := fmt.Fprintf(ic.c, format+"\r\n", args...)
	return err
}

// imapSession runs one client's IMAP session: login here, then the relay.
func (s *Server) imapSession(c net.Conn) (logged *relay) {
	ip, ok, loopback := s.allowed(c)
	ic := &imapConn{s: s, c: c, r: newLineReader(c), ip: ip, loopback: loopback}
	defer func() { logged = ic.rel }()
	start := time.Now()
	c.SetWriteDeadline(start.Add(s.opts.LoginTimeout))
	if !ok {
		ic.write("* BYE access denied: %s is not in listen.allowed_networks", ip)
		return
	}
	ic.write("* OK [CAPABILITY %s] oauthrelay IMAP proxy ready", ic.caps())
	bad, failures := 0, 0
	for bad < imapMaxBad && failures < maxLoginFailures {
		if !s.loginDeadline(ic.c, start) {
			ic.write("* BYE login took too long")
			return
		}
		tag, cmd, args, err := ic.readCommand()
		if err != nil {
			var be *imapBad
			if !errors.As(err, &be) {
				var ne net.Error
				switch {
				case errors.Is(err, errLineTooLong):
					ic.write("* BYE command line too long")
				case errors.As(err, &ne) && ne.Timeout():
					ic.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					ic.write("* BYE autologout: no login in time")
				}
				return
			}
			ic.write("%s BAD %s", be.tag, be.msg)
			bad++
			continue
		}
		switch cmd {
		case "CAPABILITY":
			ic.write("* CAPABILITY %s", ic.caps())
			ic.write("%s OK CAPABILITY completed", tag)
		case "NOOP":
			ic.write("%s OK NOOP completed", tag)
		case "LOGOUT":
			ic.write("* BYE oauthrelay IMAP proxy logging out")
			ic.write("%s OK LOGOUT completed", tag)
			return
		case "ID":
			ic.write(`* ID ("name" "oauthrelay")`)
			ic.write("%s OK ID completed", tag)
		case "LOGIN", "AUTHENTICATE":
			if !ic.private() {
				// Refused before a continuation, so a client that waits
				// for one never sends its password in clear text.
				s.event(IMAP, LoginNotPrivate)
				ic.write("%s NO [PRIVACYREQUIRED] login needs a private connection: %s", tag, s.privacyHint("STARTTLS"))
				bad++
				continue
			}
			var user, pass string
			if cmd == "LOGIN" {
				if len(args) != 2 {
					ic.write("%s BAD LOGIN needs a user name and a password", tag)
					bad++
					continue
				}
				user, pass = args[0], args[1]
			} else {
				var msg string
				user, pass, msg, err = ic.authenticatePlain(args)
				if err != nil {
					return
				}
				if msg != "" {
					ic.write("%s %s", tag, msg)
					bad++
					continue
				}
			}
			done, failed := ic.login(tag, user, pass)
			if done {
				return
			}
			if failed {
				failures++
			} else {
				bad++
			}
		case "STARTTLS":
			switch {
			case s.opts.TLS == nil:
				ic.write("%s BAD STARTTLS is not offered: listen.tls has no certificate; connect from this machine (loopback)", tag)
				bad++
			case ic.secure:
				ic.write("%s BAD TLS is already on", tag)
				bad++
			case ic.r.r.Buffered() > 0:
				// Commands pipelined after STARTTLS would be read as if
				// they came over TLS (the STARTTLS injection attack,
				// CVE-2011-0411); RFC 9051 6.2.1 forbids sending them.
				ic.write("* BYE commands after STARTTLS before the TLS handshake")
				return
			default:
				ic.write("%s OK Begin TLS negotiation now", tag)
				tc, err := s.startTLS(c, IMAP, ip)
				if err != nil {
					return
				}
				// RFC 9051 6.2.1: the client forgets what it was told
				// before and asks CAPABILITY again.
				ic.c, ic.r, ic.secure = tc, newLineReader(tc), true
			}
		default:
			ic.write("%s BAD %s is unknown or not allowed before login", tag, truncate(cmd, 32))
			bad++
		}
	}
	ic.write("* BYE too many errors")
	return nil
}

// authenticatePlain reads AUTHENTICATE PLAIN's response (initial response
// or after a continuation) and decodes it. msg is a refusal for the client
// (with its NO/BAD), err a connection failure.
func (ic *imapConn) authenticatePlain(args []string) (user, pass, msg string, err error) {
	if len(args) == 0 || len(args) > 2 {
		return "", "", "BAD AUTHENTICATE needs a mechanism", nil
	}
	if !strings.EqualFold(args[0], "PLAIN") {
		return "", "", "NO unsupported authentication mechanism; use PLAIN", nil
	}
	var resp string
	if len(args) == 2 {
		resp = args[1] // SASL-IR, RFC 4959; "=" is an empty response
	} else {
		if err := ic.write("+ "); err != nil {
			return "", "", "", err
		}
		if resp, err = ic.r.readLine(imapMaxLine); err != nil {
			return "", "", "", err
		}
	}
	if resp == "*" {
		return "", "", "BAD AUTHENTICATE cancelled", nil
	}
	user, pass, ok := decodePlain(resp)
	if !ok {
		return "", "", "BAD invalid AUTHENTICATE PLAIN response", nil
	}
	return user, pass, "", nil
}

// decodePlain decodes a SASL PLAIN response (RFC 4616): [authzid] NUL
// authcid NUL passwd. An authorization identity other than the user is
// refused: the relay has no proxy logins.
func decodePlain(b64 string) (user, pass string, ok bool) {
	if b64 == "=" {
		b64 = ""
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", "", false
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 || parts[1] == "" || (parts[0] != "" && parts[0] != parts[1]) {
		return "", "", false
	}
	return parts[1], parts[2], true
}

// login is Server.login with IMAP's answers, tagged with the client's tag.
func (ic *imapConn) login(tag, user, pass string) (done, failed bool) {
	ic.rel, done, failed = ic.s.login(IMAP, ic.c, ic.r, ic.ip, ic.write, user, pass, loginReplies{
		lockedOut:   tag + " NO [UNAVAILABLE] too many failed logins from your address; try again later",
		badPassword: tag + " NO [AUTHENTICATIONFAILED] invalid user name or password",
		busy:        tag + " NO [UNAVAILABLE] too many connections for this mailbox",
		unavailable: func(msg string, closing bool) string {
			if closing {
				return "* BYE [UNAVAILABLE] " + msg
			}
			return tag + " NO [UNAVAILABLE] " + msg
		},
	}, func(u *upstreamConn, cred tokens.Credential) (string, string, error) {
		caps, refusal, err := imapUpstreamLogin(u, cred)
		return tag + " OK [CAPABILITY " + caps + "] LOGIN completed", refusal, err
	})
	return done, failed
}

// imapBad is a command the relay answers with BAD.
type imapBad struct{ tag, msg string }

func (e *imapBad) Error() string { return e.msg }

// readCommand reads one command: tag, upper-cased name, arguments (atoms,
// quoted strings, literals). A synchronizing literal {n} gets a
// continuation before the relay reads its n octets (RFC 3501 7.5); a
// non-synchronizing one {n+} (RFC 7888) is read at once.
func (ic *imapConn) readCommand() (tag, cmd string, args []string, err error) {
	line, err := ic.r.readLine(imapMaxLine)
	if err != nil {
		return "", "", nil, err
	}
	if strings.HasPrefix(line, " ") {
		return "", "", nil, &imapBad{tag: "*", msg: "a command starts with its tag"}
	}
	var all []string
	for {
		toks, n, sync, serr := scanIMAPArgs(line)
		all = append(all, toks...)
		tag := "*"
		if len(all) > 0 {
			tag = all[0]
		}
		if serr != nil {
			return "", "", nil, &imapBad{tag: tag, msg: serr.Error()}
		}
		if n < 0 {
			break
		}
		if n > imapMaxLiteral {
			if !sync {
				return "", "", nil, errLineTooLong // its octets are on their way: cannot go on
			}
			return "", "", nil, &imapBad{tag: tag, msg: "literal too big before login"}
		}
		if sync {
			if err := ic.write("+ Ready for literal data"); err != nil {
				return "", "", nil, err
			}
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(ic.r.r, buf); err != nil {
			return "", "", nil, err
		}
		all = append(all, string(buf))
		if line, err = ic.r.readLine(imapMaxLine); err != nil {
			return "", "", nil, err
		}
	}
	if len(all) < 2 {
		tag := "*"
		if len(all) == 1 && validTag(all[0]) {
			tag = all[0]
		}
		return "", "", nil, &imapBad{tag: tag, msg: "missing command"}
	}
	if !validTag(all[0]) {
		// A reply tagged "*" or "+" would read as untagged or as a
		// continuation.
		return "", "", nil, &imapBad{tag: "*", msg: "invalid tag (RFC 3501: letters, digits and most punctuation, not * + % ( ) { \\ \")"}
	}
	return all[0], strings.ToUpper(all[1]), all[2:], nil
}

// validTag reports whether s is an RFC 3501 tag: ASTRING-CHARs but "+",
// at most 64 of them here.
func validTag(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\+`, c) >= 0 {
			return false
		}
	}
	return true
}

// scanIMAPArgs splits one line into arguments. Parentheses are arguments
// of their own (ID's list); if the line ends in a literal's {n} or {n+},
// n is returned (else -1) and sync is false for {n+}.
func scanIMAPArgs(s string) (args []string, n int, sync bool, err error) {
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case ' ':
			i++
		case '(', ')':
			args = append(args, string(c))
			i++
		case '"':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) && !closed {
				switch {
				case s[i] == '\\' && i+1 < len(s):
					b.WriteByte(s[i+1])
					i += 2
				case s[i] == '"':
					closed = true
					i++
				default:
					b.WriteByte(s[i])
					i++
				}
			}
			if !closed {
				return args, -1, false, errors.New("unterminated quoted string")
			}
			args = append(args, b.String())
		case '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 || i+j+1 != len(s) {
				return args, -1, false, errors.New("a literal's {n} must end the line")
			}
			num := s[i+1 : i+j]
			sync = !strings.HasSuffix(num, "+")
			v, err := strconv.Atoi(strings.TrimSuffix(num, "+"))
			if err != nil || v < 0 {
				return args, -1, false, errors.New("invalid literal length")
			}
			return args, v, sync, nil
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '(' && s[j] != ')' {
				j++
			}
			args = append(args, s[i:j])
			i = j
		}
	}
	return args, -1, false, nil
}

// imapUpstreamLogin reads Exchange Online's greeting and signs in with
// AUTHENTICATE XOAUTH2 and the initial response (SASL-IR). It returns the
// capabilities to offer the client, or Microsoft's refusal (e.g. "NO
// AUTHENTICATE failed."), or an error when the upstream made no sense.
func imapUpstreamLogin(u *upstreamConn, cred tokens.Credential) (caps, refusal string, err error) {
	greet, err := u.br.readLine(imapMaxLine)
	if err != nil {
		return "", "", fmt.Errorf("reading the greeting: %w", err)
	}
	if !strings.HasPrefix(strings.ToUpper(greet), "* OK") {
		return "", "", fmt.Errorf("greeting %q", truncate(greet, 200))
	}
	mech, ir, err := cred.SASL.Start()
	if err != nil {
		return "", "", err
	}
	if _, err := fmt.Fprintf(u.conn, "%s AUTHENTICATE %s %s\r\n", imapUpTag, mech, base64.StdEncoding.EncodeToString(ir)); err != nil {
		return "", "", err
	}
	for {
		line, err := u.br.readLine(64 << 10)
		if err != nil {
			return "", "", fmt.Errorf("reading the AUTHENTICATE reply: %w", err)
		}
		switch {
		case strings.HasPrefix(line, "+"):
			// A challenge after XOAUTH2's only message is an error report
			// (Google sends base64 JSON); an empty response gets the NO.
			if _, err := io.WriteString(u.conn, "\r\n"); err != nil {
				return "", "", err
			}
		case strings.HasPrefix(line, "* "):
			if c, ok := cutFold(line[2:], "CAPABILITY "); ok {
				caps = c
			}
		case strings.HasPrefix(line, imapUpTag+" "):
			status := line[len(imapUpTag)+1:]
			switch {
			case hasPrefixFold(status, "OK"):
				if c, ok := respCode(status, "CAPABILITY"); ok {
					caps = c
				}
				if caps == "" {
					if caps, err = imapCapability(u); err != nil {
						return "", "", err
					}
				}
				return stripCaps(caps), "", nil
			case hasPrefixFold(status, "NO"):
				return "", status, nil
			default:
				return "", "", fmt.Errorf("AUTHENTICATE answered %q", truncate(status, 200))
			}
		default:
			return "", "", fmt.Errorf("unexpected line %q", truncate(line, 200))
		}
	}
}

// imapCapability asks the upstream for its (post-login) capabilities.
func imapCapability(u *upstreamConn) (string, error) {
	const tag = "oauthrelay2"
	if _, err := io.WriteString(u.conn, tag+" CAPABILITY\r\n"); err != nil {
		return "", err
	}
	var caps string
	for {
		line, err := u.br.readLine(64 << 10)
		if err != nil {
			return "", fmt.Errorf("reading the CAPABILITY reply: %w", err)
		}
		if c, ok := cutFold(line, "* CAPABILITY "); ok {
			caps = c
		}
		if status, ok := strings.CutPrefix(line, tag+" "); ok {
			if !hasPrefixFold(status, "OK") || caps == "" {
				return "", fmt.Errorf("CAPABILITY answered %q", truncate(status, 200))
			}
			return caps, nil
		}
	}
}

// stripCaps removes what the client must not use through the relay.
// COMPRESS=DEFLATE (RFC 4978) goes: the relay keeps the session readable as
// IMAP on its way through, so that a later step can watch it (LOGOUT, a
// STARTTLS of its own), and compressing a TLS session's data mixed with
// secrets invites CRIME-like attacks (RFC 4978 section 8).
func stripCaps(caps string) string {
	var out []string
	for _, c := range strings.Fields(caps) {
		if strings.EqualFold(c, "COMPRESS=DEFLATE") {
			continue
		}
		out = append(out, c)
	}
	return strings.Join(out, " ")
}

// respCode returns the text of a response code [NAME text] at the start
// of an OK/NO status.
func respCode(status, name string) (string, bool) {
	i := strings.IndexByte(status, '[')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(status[i:], ']')
	if j < 0 {
		return "", false
	}
	return cutFold(status[i+1:i+j], name+" ")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func cutFold(s, prefix string) (string, bool) {
	if !hasPrefixFold(s, prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
