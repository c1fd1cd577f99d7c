package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpConn is one client's SMTP session on the wire (RFC 5321): it reads
// command lines, keeps the transaction's state, parses paths and
// parameters, and writes the replies; what is allowed (routing, AUTH,
// queueing) it asks of its session.
//
// It replaces go-smtp's server, which hands addresses on with their quotes
// stripped (so `"a> X=y"@b` cannot be told from `a> X=y@b`), never finds
// the end of a message whose last line ends in a lone CR, and answers with
// texts of its own.
type smtpConn struct {
	l      *Listener
	br     *bufio.Reader
	bw     *bufio.Writer
	remote netip.Addr
	isTLS  bool
	sess   *session

	helo string // the client's HELO/EHLO argument, as sent
	ehlo bool   // greeted with EHLO: service extensions may be used

	// What the session has used of its limits; STARTTLS keeps them.
	errs      int       // syntax errors so far
	authFails int       // failed AUTHs so far
	junk      int       // commands since the last message accepted (MaxJunkCommands)
	lastCode  int       // the code of the last reply written
	endsAt    time.Time // MaxSessionTime reached; zero: never
	dataEnds  time.Time // the message being received must be in by then (MaxDataTime); zero: no bound

	// The open mail transaction, if any.
	inTx      bool
	txUTF8    bool // its MAIL had SMTPUTF8
	rcpts     int  // recipients accepted
	rcptTries int  // RCPT commands, refused ones too

	command bool // reading a command line (not DATA): Shutdown may interrupt

	mu      sync.Mutex
	nc      net.Conn // replaced by its TLS layer after STARTTLS
	waiting bool     // blocked reading a command
	closing bool     // the listener shuts down
}

const (
	// maxCommandLine: RFC 5321 4.5.3.1.4 allows 512 octets, extensions
	// more; RFC 4954 4 asks for 12288 for AUTH and its responses.
	maxCommandLine = 12288
	// maxDataLine: long HTML lines happen and RFC 5321's 1000 is often
	// exceeded; past this the message is refused for good (552 5.3.4).
	maxDataLine = 128 << 10
	// maxErrors syntax errors end a session (a client talking nonsense).
	maxErrors = 10
	// maxAuthFailures failed AUTHs end a session; the address's lockout
	// (internal/lockout) slows it down across sessions.
	maxAuthFailures = 5
)

var (
	errLineTooLong  = errors.New("command line too long")
	errShuttingDown = errors.New("shutting down")
)

func newSMTPConn(l *Listener, nc net.Conn) *smtpConn {
	c := &smtpConn{l: l, nc: nc, remote: remoteIP(nc)}
	if t := l.cfg.MaxSessionTime; t > 0 {
		c.endsAt = time.Now().Add(t)
	}
	c.br = bufio.NewReaderSize(connReader{c}, 64<<10)
	c.bw = bufio.NewWriter(nc)
	c.sess = l.newSession(c)
	return c
}

// serve runs the session until QUIT, an error or Shutdown.
func (c *smtpConn) serve() {
	defer func() {
		if r := recover(); r != nil {
			c.l.log.Error("smtp: panic serving a client; closing its connection", "client", c.remote.String(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.reply(421, smtp.EnhancedCode{4, 3, 0}, c.l.cfg.Hostname+" Internal error, closing connection")
		}
		c.conn().Close()
	}()
	c.reply(220, smtp.NoEnhancedCode, c.l.cfg.Hostname+" ESMTP oauthrelay ready")
	for {
		line, err := c.readLine()
		tooLong := errors.Is(err, errLineTooLong)
		if err != nil && !tooLong {
			c.readFailed(err)
			return
		}
		if c.isClosing() {
			c.reply(421, smtp.EnhancedCode{4, 3, 2}, c.l.cfg.Hostname+" Service shutting down, try again later")
			return
		}
		if c.sessionOver() {
			c.sessionTimeUp()
			return
		}
		verb, _, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if n := c.l.cfg.MaxJunkCommands; n > 0 && c.junk >= n && verb != "QUIT" {
			c.refuse("junk_commands", 421, smtp.EnhancedCode{4, 7, 0}, c.l.cfg.Hostname+" Too many commands without mail; closing connection")
			c.l.log.Warn("smtp: session closed: too many commands without mail (listen.max_junk_commands)", "client", c.remote.String(), "commands", c.junk)
			return
		}
		c.lastCode = 0
		if verb == "RCPT" && c.inTx {
			c.rcptTries++
		}
		if tooLong {
			c.tooLong(line)
		} else if !c.handle(verb, line) {
			return
		}
		if c.isJunk(verb) {
			c.junk++
		}
		if c.errs >= maxErrors {
			c.reply(421, smtp.EnhancedCode{4, 7, 0}, c.l.cfg.Hostname+" Too many errors, closing connection")
			return
		}
		if c.authFails >= maxAuthFailures {
			c.reply(421, smtp.EnhancedCode{4, 7, 0}, fmt.Sprintf("%s Too many failed authentication attempts (%d); closing connection", c.l.cfg.Hostname, c.authFails))
			return
		}
	}
}

// isJunk says whether the command just answered counts against
// MaxJunkCommands: all but the steps of a transaction (MAIL, RCPT, DATA),
// AUTH and STARTTLS that succeed, and QUIT. A refused command counts, but
// for a message's first maxRecipients RCPTs: a recipient refused among
// them is a client's mistake (RFC 5321 4.5.3.1.8 lets a message have 100),
// not idling.
func (c *smtpConn) isJunk(verb string) bool {
	refused := c.lastCode >= 400 || c.lastCode == 0
	switch verb {
	case "RCPT":
		return refused && (!c.inTx || c.rcptTries > c.l.maxRecipients())
	case "MAIL", "DATA", "AUTH", "STARTTLS":
		return refused
	case "QUIT":
		return false
	}
	return true
}

// readFailed answers a command (or AUTH response) that could not be read;
// the session ends.
func (c *smtpConn) readFailed(err error) {
	switch {
	case errors.Is(err, errShuttingDown) || c.isClosing():
		c.reply(421, smtp.EnhancedCode{4, 3, 2}, c.l.cfg.Hostname+" Service shutting down, try again later")
	case isTimeout(err) && c.sessionOver():
		c.sessionTimeUp()
	case isTimeout(err):
		c.reply(421, smtp.EnhancedCode{4, 4, 2}, c.l.cfg.Hostname+" Timeout waiting for a command, closing connection")
	}
}

// sessionOver reports whether the session has reached MaxSessionTime.
func (c *smtpConn) sessionOver() bool {
	return !c.endsAt.IsZero() && !time.Now().Before(c.endsAt)
}

func (c *smtpConn) sessionTimeUp() {
	c.refuse("session_time", 421, smtp.EnhancedCode{4, 7, 0}, fmt.Sprintf("%s Session time limit reached (%s); closing connection", c.l.cfg.Hostname, c.l.cfg.MaxSessionTime))
	c.l.log.Info("smtp: session closed at its time limit (listen.max_session_time)", "client", c.remote.String(), "limit", c.l.cfg.MaxSessionTime.String())
}

// handle runs one command, verb in upper case; false ends the session.
func (c *smtpConn) handle(verb, line string) bool {
	_, arg, _ := strings.Cut(line, " ")
	arg = strings.Trim(arg, " \t")
	switch verb {
	case "EHLO":
		c.hello(true, arg)
	case "HELO":
		c.hello(false, arg)
	case "MAIL":
		c.mail(arg)
	case "RCPT":
		c.rcpt(arg)
	case "DATA":
		return c.data(arg)
	case "RSET":
		if arg != "" {
			c.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: RSET (no arguments)")
			return true
		}
		c.resetTx()
		c.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "NOOP":
		c.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "QUIT":
		c.reply(221, smtp.EnhancedCode{2, 0, 0}, c.l.cfg.Hostname+" Service closing transmission channel")
		return false
	case "VRFY":
		// RFC 5321 3.5.3: 252 when the server does not verify.
		c.reply(252, smtp.EnhancedCode{2, 5, 0}, "Cannot VRFY user, but will accept message and attempt delivery")
	case "AUTH":
		return c.auth(arg)
	case "STARTTLS":
		return c.startTLS(arg)
	case "BDAT":
		// CHUNKING is not offered: the chunk that follows is not read as
		// commands, so the connection ends here.
		c.reply(421, smtp.EnhancedCode{4, 5, 1}, c.l.cfg.Hostname+" BDAT is not offered (no CHUNKING); closing connection")
		return false
	case "EXPN", "HELP", "TURN", "ETRN", "SEND", "SOML", "SAML":
		c.reply(502, smtp.EnhancedCode{5, 5, 1}, "Command not implemented")
	case "":
		c.errs++
		c.reply(500, smtp.EnhancedCode{5, 5, 2}, "Syntax error: empty command")
	default:
		c.errs++
		c.reply(500, smtp.EnhancedCode{5, 5, 2}, "Syntax error: command not recognized")
	}
	return true
}

// hello answers HELO/EHLO; either resets the transaction (RFC 5321 4.1.4).
func (c *smtpConn) hello(ehlo bool, arg string) {
	domain, _, _ := strings.Cut(arg, " ")
	if domain == "" {
		c.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: EHLO domain (or HELO domain)")
		return
	}
	c.resetTx()
	c.helo, c.ehlo = domain, ehlo
	greet := c.l.cfg.Hostname + " Hello " + heloForHeader(domain)
	if !ehlo {
		c.replyLines(250, []string{greet})
		return
	}
	lines := []string{greet, "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"}
	if m := c.l.cfg.MaxMessageBytes; m > 0 {
		lines = append(lines, fmt.Sprintf("SIZE %d", m))
	} else {
		lines = append(lines, "SIZE")
	}
	lines = append(lines, fmt.Sprintf("LIMITS RCPTMAX=%d", c.l.maxRecipients())) // RFC 9422
	if c.l.cfg.TLS != nil && !c.isTLS {
		lines = append(lines, "STARTTLS")
	}
	if mechs := c.sess.AuthMechanisms(); len(mechs) > 0 {
		lines = append(lines, "AUTH "+strings.Join(mechs, " "))
	}
	c.replyLines(250, lines)
}

func (c *smtpConn) mail(arg string) {
	if c.helo == "" {
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Send HELO or EHLO first")
		return
	}
	if c.inTx {
		// RFC 5321 3.3: one transaction at a time; RSET ends it.
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Sender already given; send RSET to start over")
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		c.errs++
		c.reply(501, smtp.EnhancedCode{5, 5, 2}, "Syntax: MAIL FROM:<address> [parameters]")
		return
	}
	// Parsed with UTF-8 allowed; whether SMTPUTF8 came is known from the
	// parameters, which follow.
	from, params, aerr := parsePath(strings.TrimLeft(rest, " "), true, true)
	if aerr != nil {
		c.refuse("address", 501, smtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax: "+aerr.msg)
		return
	}
	p, perr := parseMailParams(params, c.ehlo)
	if perr != nil {
		c.replyErr(perr)
		return
	}
	if !p.smtputf8 && !from.IsASCII() {
		c.refuse("address", 553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address not permitted without SMTPUTF8 (RFC 6531)")
		return
	}
	if err := c.sess.Mail(from, p); err != nil {
		c.replyErr(err)
		return
	}
	c.inTx, c.txUTF8, c.rcpts, c.rcptTries = true, p.smtputf8, 0, 0
	c.reply(250, smtp.EnhancedCode{2, 1, 0}, "Sender OK")
}

func (c *smtpConn) rcpt(arg string) {
	if !c.inTx {
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Send MAIL first")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		c.errs++
		c.reply(501, smtp.EnhancedCode{5, 5, 2}, "Syntax: RCPT TO:<address>")
		return
	}
	to, params, aerr := parsePath(strings.TrimLeft(rest, " "), false, true)
	if aerr != nil {
		c.refuse("address", 553, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address syntax: "+aerr.msg)
		return
	}
	if p := strings.Trim(params, " "); p != "" {
		// No RCPT parameter is offered (DSN is not): NOTIFY, ORCPT… are
		// refused, never passed on.
		key, _, _ := strings.Cut(p, "=")
		c.reply(555, smtp.EnhancedCode{5, 5, 4}, "RCPT TO parameter not recognized or not implemented: "+visible(key))
		return
	}
	if !c.txUTF8 && !to.IsASCII() {
		c.refuse("address", 553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address not permitted without SMTPUTF8 (RFC 6531)")
		return
	}
	if c.rcpts >= c.l.maxRecipients() {
		// RFC 5321 4.5.3.1.10: the client sends the rest in another message.
		c.refuse("recipients", 452, smtp.EnhancedCode{4, 5, 3}, fmt.Sprintf("Too many recipients (at most %d per message)", c.l.maxRecipients()))
		return
	}
	if err := c.sess.Rcpt(to); err != nil {
		c.replyErr(err)
		return
	}
	c.rcpts++
	c.reply(250, smtp.EnhancedCode{2, 1, 5}, "Recipient OK")
}

// data receives the message; false ends the session (the connection failed).
func (c *smtpConn) data(arg string) bool {
	if arg != "" {
		c.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: DATA (no arguments)")
		return true
	}
	if !c.inTx {
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Send MAIL and RCPT first")
		return true
	}
	if c.rcpts == 0 {
		c.reply(554, smtp.EnhancedCode{5, 5, 1}, "No valid recipients") // RFC 5321 3.3
		return true
	}
	c.reply(354, smtp.NoEnhancedCode, "Start mail input; end with <CRLF>.<CRLF>")
	if t := c.l.cfg.MaxDataTime; t > 0 {
		c.dataEnds = time.Now().Add(t)
	}
	r := newDataReader(c.br, c.l.cfg.MaxMessageBytes, maxDataLine)
	err := c.sess.Data(r)
	readErr := r.drain()
	late := !c.dataEnds.IsZero() && !time.Now().Before(c.dataEnds)
	c.dataEnds = time.Time{}
	c.resetTx()
	if readErr != nil {
		switch {
		case isTimeout(readErr) && late:
			// Nothing was queued: the queue saw the read fail.
			c.refuse("data_time", 421, smtp.EnhancedCode{4, 4, 2}, fmt.Sprintf("%s Message not received within %s; closing connection", c.l.cfg.Hostname, c.l.cfg.MaxDataTime))
			c.l.log.Warn("smtp: message not received within listen.max_data_time; nothing queued", "client", c.remote.String(), "limit", c.l.cfg.MaxDataTime.String())
		case isTimeout(readErr):
			c.reply(421, smtp.EnhancedCode{4, 4, 2}, c.l.cfg.Hostname+" Timeout during DATA, closing connection")
		}
		return false
	}
	if r.limitErr != nil {
		err = r.limitErr
	}
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) && se.Code == 250 {
		c.junk = 0 // a message accepted: the session is doing what it is for
	}
	if err != nil {
		c.replyErr(err)
		return true
	}
	c.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	return true
}

// auth runs an AUTH exchange (RFC 4954); false ends the session (the
// connection failed). A failed AUTH counts towards maxAuthFailures, and
// the session tells the address's lockout.
func (c *smtpConn) auth(arg string) bool {
	switch {
	case !c.ehlo:
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Send EHLO first")
		return true
	case c.sess.authUser != "":
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Already authenticated")
		return true
	case c.inTx:
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "AUTH is not permitted during a mail transaction")
		return true
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	if mech == "" {
		c.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: AUTH mechanism [initial-response]")
		return true
	}
	srv, err := c.sess.Auth(strings.ToUpper(mech))
	if err == errAuthLocked {
		c.authFails++
		c.replyErr(c.sess.AuthFailed(err))
		return true
	}
	if err != nil {
		c.replyErr(err)
		return true
	}
	var resp []byte
	if hasIR {
		if resp, err = decodeSASL(strings.TrimSpace(ir)); err != nil {
			c.reply(501, smtp.EnhancedCode{5, 5, 2}, "Invalid base64 data")
			return true
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			c.authFails++
			c.replyErr(c.sess.AuthFailed(err))
			return true
		}
		if done {
			c.sess.AuthSucceeded()
			c.reply(235, smtp.EnhancedCode{2, 7, 0}, "Authentication successful")
			return true
		}
		c.replyLines(334, []string{base64.StdEncoding.EncodeToString(challenge)})
		line, err := c.readLine()
		if errors.Is(err, errLineTooLong) {
			c.reply(500, smtp.EnhancedCode{5, 5, 6}, "Authentication exchange line is too long")
			return true
		}
		if err != nil {
			c.readFailed(err)
			return false
		}
		if line == "*" {
			c.reply(501, smtp.EnhancedCode{5, 0, 0}, "Authentication cancelled")
			return true
		}
		if resp, err = decodeSASL(line); err != nil {
			c.reply(501, smtp.EnhancedCode{5, 5, 2}, "Invalid base64 data")
			return true
		}
	}
}

func decodeSASL(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// startTLS upgrades the connection (RFC 3207); false ends the session.
func (c *smtpConn) startTLS(arg string) bool {
	switch {
	case arg != "":
		c.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: STARTTLS (no arguments)")
		return true
	case c.isTLS:
		c.reply(503, smtp.EnhancedCode{5, 5, 1}, "Already running TLS")
		return true
	case c.l.cfg.TLS == nil:
		c.reply(502, smtp.EnhancedCode{5, 5, 1}, "STARTTLS is not offered")
		return true
	}
	c.reply(220, smtp.EnhancedCode{2, 0, 0}, "Ready to start TLS")
	tc := tls.Server(c.conn(), c.l.cfg.TLS)
	if t := c.l.cfg.ReadTimeout; t > 0 {
		tc.SetDeadline(time.Now().Add(t))
	}
	if err := tc.Handshake(); err != nil {
		c.l.log.Debug("smtp: TLS handshake failed", "client", c.remote.String(), "error", err.Error())
		return false
	}
	tc.SetDeadline(time.Time{})
	c.mu.Lock()
	c.nc = tc
	c.mu.Unlock()
	// Anything the client sent after STARTTLS in clear text is dropped
	// with the old buffer (RFC 3207 5; CVE-2011-0411), and the session
	// starts afresh: no HELO, no AUTH (RFC 3207 4.2).
	c.br = bufio.NewReaderSize(connReader{c}, 64<<10)
	c.bw = bufio.NewWriter(tc)
	c.isTLS = true
	c.resetTx()
	c.helo, c.ehlo = "", false
	c.sess = c.l.newSession(c)
	return true
}

func (c *smtpConn) resetTx() {
	c.inTx, c.txUTF8, c.rcpts, c.rcptTries = false, false, 0, 0
	c.sess.Reset()
}

// tooLong answers a command line over maxCommandLine. A MAIL or RCPT
// line that long has a path over 256 octets unless its parameters are at
// fault, and gets the path's reply then.
func (c *smtpConn) tooLong(cut string) {
	verb, arg, _ := strings.Cut(cut, " ")
	arg = strings.TrimLeft(arg, " ")
	switch strings.ToUpper(verb) {
	case "MAIL":
		if rest, ok := cutPrefixFold(arg, "FROM:"); ok {
			if _, _, aerr := parsePath(strings.TrimLeft(rest, " "), true, true); aerr != nil {
				c.refuse("address", 501, smtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax: "+aerr.msg)
				return
			}
		}
	case "RCPT":
		if rest, ok := cutPrefixFold(arg, "TO:"); ok {
			if _, _, aerr := parsePath(strings.TrimLeft(rest, " "), false, true); aerr != nil {
				c.refuse("address", 553, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address syntax: "+aerr.msg)
				return
			}
		}
	}
	c.errs++
	c.reply(500, smtp.EnhancedCode{5, 5, 2}, fmt.Sprintf("Line too long: a command line is at most %d octets", maxCommandLine))
}

// readLine reads one command line (or AUTH response) without its line
// end. A line over maxCommandLine is read to its end and returned cut,
// with errLineTooLong.
func (c *smtpConn) readLine() (string, error) {
	c.command = true
	defer func() { c.command = false }()
	var line []byte
	tooLong := false
	for {
		chunk, err := c.br.ReadSlice('\n')
		if room := maxCommandLine + 2 - len(line); len(chunk) > room {
			line, tooLong = append(line, chunk[:max(room, 0)]...), true
		} else {
			line = append(line, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		break
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if tooLong {
		return string(line[:min(len(line), maxCommandLine)]), errLineTooLong
	}
	return string(line), nil
}

// refuse writes a refusal and counts it (oauthrelay_smtp_rejections_total).
func (c *smtpConn) refuse(reason string, code int, enh smtp.EnhancedCode, text string) {
	if c.l.events.Rejected != nil {
		c.l.events.Rejected(reason)
	}
	c.l.log.Debug("smtp: refused", "client", c.remote.String(), "reason", reason, "reply", fmt.Sprintf("%d %d.%d.%d %s", code, enh[0], enh[1], enh[2], text))
	c.reply(code, enh, text)
}

// reply writes one reply line. The text is made safe for the wire:
// printable ASCII only.
func (c *smtpConn) reply(code int, enh smtp.EnhancedCode, text string) {
	if enh != smtp.NoEnhancedCode {
		text = fmt.Sprintf("%d.%d.%d %s", enh[0], enh[1], enh[2], text)
	}
	c.replyLines(code, []string{text})
}

func (c *smtpConn) replyLines(code int, lines []string) {
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		c.bw.WriteString(strconv.Itoa(code) + sep + replySafe(l) + "\r\n")
	}
	c.lastCode = code
	if t := c.l.cfg.WriteTimeout; t > 0 {
		c.conn().SetWriteDeadline(time.Now().Add(t))
	}
	c.bw.Flush()
}

// replyErr writes err's SMTP reply; an error without one is a local
// failure the client may retry.
func (c *smtpConn) replyErr(err error) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		se = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error; try again later"}
	}
	enh := se.EnhancedCode
	if enh == smtp.EnhancedCodeNotSet {
		enh = smtp.EnhancedCode{se.Code / 100, 0, 0}
	}
	c.reply(se.Code, enh, se.Message)
}

func replySafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 32 || r >= 127 {
			return '?'
		}
		return r
	}, s)
}

func (c *smtpConn) conn() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc
}

func (c *smtpConn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// interrupt tells the session the listener shuts down: a session waiting
// for a command is woken at once, one in DATA finishes its message.
func (c *smtpConn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	if c.waiting {
		c.nc.SetReadDeadline(time.Now())
	}
}

// connReader reads the connection with ReadTimeout per read; while a
// command is awaited, Shutdown can interrupt the read.
type connReader struct{ c *smtpConn }

func (r connReader) Read(p []byte) (int, error) {
	c := r.c
	c.mu.Lock()
	if c.command && c.closing {
		c.mu.Unlock()
		return 0, errShuttingDown
	}
	nc := c.nc
	nc.SetReadDeadline(c.readDeadline())
	c.waiting = c.command
	c.mu.Unlock()
	n, err := nc.Read(p)
	c.mu.Lock()
	c.waiting = false
	c.mu.Unlock()
	return n, err
}

// readDeadline is when the next read times out: ReadTimeout from now,
// brought forward to the end of the session while a command is awaited,
// and to the end of MaxDataTime while a message is read. Zero: never.
func (c *smtpConn) readDeadline() time.Time {
	var d time.Time
	if t := c.l.cfg.ReadTimeout; t > 0 {
		d = time.Now().Add(t)
	}
	end := c.dataEnds
	if c.command {
		end = c.endsAt
	}
	if !end.IsZero() && (d.IsZero() || end.Before(d)) {
		d = end
	}
	return d
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// mailParams are the MAIL FROM parameters the relay takes (RFC 5321
// 4.1.1.11 for the rest).
type mailParams struct {
	size     int64
	eightBit bool // BODY=8BITMIME (RFC 6152)
	smtputf8 bool // RFC 6531
}

func parseMailParams(s string, ehlo bool) (mailParams, *smtp.SMTPError) {
	var p mailParams
	seen := map[string]bool{}
	for _, f := range strings.Split(s, " ") {
		if f == "" {
			continue
		}
		if !ehlo {
			return p, &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 5, 4},
				Message: "MAIL FROM parameters need a session begun with EHLO, not HELO"}
		}
		key, val, hasVal := strings.Cut(f, "=")
		key = strings.ToUpper(key)
		if !isKeyword(key) || hasVal && !isParamValue(val) {
			return p, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Syntax error in MAIL FROM parameter " + visible(f)}
		}
		if seen[key] {
			return p, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "MAIL FROM parameter " + key + " given twice"}
		}
		seen[key] = true
		switch key {
		case "SIZE": // RFC 1870
			n, err := strconv.ParseInt(val, 10, 64)
			if !hasVal || err != nil || n < 0 {
				return p, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "SIZE needs a number of octets"}
			}
			p.size = n
		case "BODY":
			switch strings.ToUpper(val) {
			case "7BIT":
			case "8BITMIME":
				p.eightBit = true
			case "BINARYMIME":
				return p, &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "BODY=BINARYMIME is not offered"}
			default:
				return p, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "BODY is 7BIT or 8BITMIME"}
			}
		case "SMTPUTF8":
			if hasVal {
				return p, &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "SMTPUTF8 takes no value (RFC 6531 3.4)"}
			}
			p.smtputf8 = true
		case "AUTH": // RFC 4954 5: the submitter's identity; taken and not used
			if !hasVal {
				return p, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "AUTH needs a value"}
			}
		default:
			return p, &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "MAIL FROM parameter not recognized or not implemented: " + visible(key)}
		}
	}
	return p, nil
}

// isKeyword: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
func isKeyword(s string) bool {
	if s == "" || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isParamValue: esmtp-value = 1*(%d33-60 / %d62-126).
func isParamValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == '=' {
			return false
		}
	}
	return true
}
