package inbound

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/tokens"
)

// The POP3 proxy (RFC 1939). Before login it answers CAPA (RFC 2449),
// USER/PASS, AUTH PLAIN (RFC 5034, RFC 4616) and QUIT itself; its errors
// carry RFC 3206 response codes: [AUTH] for a wrong password, [SYS/TEMP]
// for what may pass, [SYS/PERM] for what will not.

const (
	pop3Greeting = "+OK oauthrelay POP3 proxy ready"
	// pop3MaxLine bounds a line before login (an AUTH response can be
	// longer than RFC 2449's 255 octets).
	pop3MaxLine = 8 << 10
	pop3MaxBad  = 20
)

type pop3Conn struct {
	s        *Server
	c        net.Conn // the TLS connection after STLS
	r        *lineReader
	ip       netip.Addr
	loopback bool
	rel      *relay // set by a login that succeeded
	secure   bool   // STLS done
}

// private reports whether a password may be sent: on loopback, or after
// STLS.
func (pc *pop3Conn) private() bool { return pc.loopback || pc.secure }

func (pc *pop3Conn) write(format string, args ...any) error {
	_, err := fmt.Fprintf(pc.c, format+"\r\n", args...)
	return err
}

// pop3Session runs one client's POP3 session: login here, then the relay.
func (s *Server) pop3Session(c net.Conn) (logged *relay) {
	ip, ok, loopback := s.allowed(c)
	pc := &pop3Conn{s: s, c: c, r: newLineReader(c), ip: ip, loopback: loopback}
	defer func() { logged = pc.rel }()
	start := time.Now()
	c.SetWriteDeadline(start.Add(s.opts.LoginTimeout))
	if !ok {
		pc.write("-ERR [SYS/PERM] access denied: %s is not in listen.allowed_networks", ip)
		return
	}
	pc.write("%s", pop3Greeting)
	var user string
	bad, failures := 0, 0
	for bad < pop3MaxBad && failures < maxLoginFailures {
		if !s.loginDeadline(pc.c, start) {
			pc.write("-ERR [SYS/TEMP] login took too long")
			return
		}
		line, err := pc.r.readLine(pop3MaxLine)
		if err != nil {
			var ne net.Error
			switch {
			case err == errLineTooLong:
				pc.write("-ERR line too long")
			case errors.As(err, &ne) && ne.Timeout():
				pc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				pc.write("-ERR [SYS/TEMP] no login in time")
			}
			return
		}
		cmd, arg, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if !pc.private() && (cmd == "USER" || cmd == "PASS" || (cmd == "AUTH" && arg != "")) {
			// Refused at USER or AUTH, so a client that waits for the
			// answer never sends its password in clear text.
			s.event(POP3, LoginNotPrivate)
			pc.write("-ERR [SYS/PERM] login needs a private connection: %s", s.privacyHint("STLS"))
			bad++
			continue
		}
		switch cmd {
		case "CAPA":
			pc.write("+OK capability list follows")
			if s.opts.TLS != nil && !pc.secure {
				pc.write("STLS") // RFC 2595 4
			}
			if pc.private() {
				pc.write("USER")
				pc.write("SASL PLAIN")
			}
			pc.write("RESP-CODES")
			pc.write("AUTH-RESP-CODE")
			pc.write("IMPLEMENTATION oauthrelay")
			pc.write(".")
		case "QUIT":
			pc.write("+OK oauthrelay POP3 proxy signing off")
			return
		case "USER":
			if arg == "" {
				pc.write("-ERR USER needs a name")
				bad++
				continue
			}
			user = arg
			pc.write("+OK")
		case "PASS":
			if user == "" {
				pc.write("-ERR USER first")
				bad++
				continue
			}
			done, failed := pc.login(user, arg)
			user = ""
			if done {
				return
			}
			if failed {
				failures++
			}
		case "AUTH":
			if arg == "" {
				pc.write("+OK")
				pc.write("PLAIN")
				pc.write(".")
				continue
			}
			u, p, msg, err := pc.authPlain(arg)
			if err != nil {
				return
			}
			if msg != "" {
				pc.write("%s", msg)
				bad++
				continue
			}
			done, failed := pc.login(u, p)
			if done {
				return
			}
			if failed {
				failures++
			}
		case "STLS":
			switch {
			case s.opts.TLS == nil:
				pc.write("-ERR STLS is not offered: listen.tls has no certificate; connect from this machine (loopback)")
				bad++
			case pc.secure:
				pc.write("-ERR TLS is already on")
				bad++
			case pc.r.r.Buffered() > 0:
				// Commands pipelined after STLS would be read as if they
				// came over TLS (STARTTLS injection, CVE-2011-0411).
				pc.write("-ERR commands after STLS before the TLS handshake")
				return
			default:
				pc.write("+OK Begin TLS negotiation")
				tc, err := s.startTLS(c, POP3, ip)
				if err != nil {
					return
				}
				// RFC 2595 4: a USER given before STLS is forgotten.
				pc.c, pc.r, pc.secure, user = tc, newLineReader(tc), true, ""
			}
		default:
			pc.write("-ERR %s is unknown or not allowed before login", truncate(cmd, 32))
			bad++
		}
	}
	pc.write("-ERR too many errors")
	return nil
}

// authPlain reads AUTH PLAIN's response (initial or after "+ ") and
// decodes it; msg is a refusal for the client, err a connection failure.
func (pc *pop3Conn) authPlain(arg string) (user, pass, msg string, err error) {
	mech, resp, hasIR := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		return "", "", "-ERR unsupported authentication mechanism; use PLAIN", nil
	}
	if !hasIR {
		if err := pc.write("+ "); err != nil {
			return "", "", "", err
		}
		if resp, err = pc.r.readLine(pop3MaxLine); err != nil {
			return "", "", "", err
		}
	}
	if resp == "*" {
		return "", "", "-ERR AUTH cancelled", nil
	}
	user, pass, ok := decodePlain(resp)
	if !ok {
		return "", "", "-ERR invalid AUTH PLAIN response", nil
	}
	return user, pass, "", nil
}

// login is Server.login with POP3's answers.
func (pc *pop3Conn) login(user, pass string) (done, failed bool) {
	pc.rel, done, failed = pc.s.login(POP3, pc.c, pc.r, pc.ip, pc.write, user, pass, loginReplies{
		lockedOut:   "-ERR [SYS/TEMP] too many failed logins from your address; try again later",
		badPassword: "-ERR [AUTH] invalid user name or password",
		busy:        "-ERR [SYS/TEMP] too many connections for this mailbox",
		unavailable: func(msg string, _ bool) string { return "-ERR [SYS/TEMP] " + msg },
	}, pop3UpstreamLogin)
	return done, failed
}

// pop3UpstreamLogin reads Exchange Online's greeting and signs in with
// AUTH XOAUTH2 and the initial response. It returns the +OK line to pass
// to the client, or Microsoft's refusal ("-ERR Authentication failure…"),
// or an error when the upstream made no sense.
func pop3UpstreamLogin(u *upstreamConn, cred tokens.Credential) (ok, refusal string, err error) {
	greet, err := u.br.readLine(pop3MaxLine)
	if err != nil {
		return "", "", fmt.Errorf("reading the greeting: %w", err)
	}
	if !strings.HasPrefix(greet, "+OK") {
		return "", "", fmt.Errorf("greeting %q", truncate(greet, 200))
	}
	mech, ir, err := cred.SASL.Start()
	if err != nil {
		return "", "", err
	}
	if _, err := fmt.Fprintf(u.conn, "AUTH %s %s\r\n", mech, base64.StdEncoding.EncodeToString(ir)); err != nil {
		return "", "", err
	}
	for {
		line, err := u.br.readLine(64 << 10)
		if err != nil {
			return "", "", fmt.Errorf("reading the AUTH reply: %w", err)
		}
		switch {
		case strings.HasPrefix(line, "+OK"):
			return line, "", nil
		case strings.HasPrefix(line, "-ERR"):
			return "", line, nil
		case strings.HasPrefix(line, "+"):
			// An error report as a challenge (XOAUTH2 has one message):
			// an empty response gets the -ERR.
			if _, err := io.WriteString(u.conn, "\r\n"); err != nil {
				return "", "", err
			}
		default:
			return "", "", fmt.Errorf("AUTH answered %q", truncate(line, 200))
		}
	}
}
