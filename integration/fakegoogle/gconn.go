package fakegoogle

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"time"
)

// gconn sits between go-smtp and the client's TCP connection and makes the
// dialogue read like smtp.gmail.com's where go-smtp has no hook:
//
//   - it answers STARTTLS itself and does the handshake, so that everything
//     go-smtp writes afterwards still passes through here as text;
//   - it rewrites go-smtp's fixed texts (greeting, EHLO, 235, MAIL/RCPT
//     250, 354, QUIT) into Gmail's, and lists Gmail's EHLO keywords in
//     Gmail's order;
//   - it closes the connection after a 421, as Gmail does.
//
// go-smtp therefore never sees TLS (it runs with AllowInsecureAuth and no
// TLSConfig); the session asks the gconn whether TLS is on. Before TLS no
// transaction can start (MAIL and AUTH need it), so every line the client
// sends then is a command and STARTTLS can be recognised line by line.
type gconn struct {
	raw net.Conn
	cfg *tls.Config

	mu      sync.Mutex
	cur     net.Conn      // raw, or the TLS connection over it
	br      *bufio.Reader // reads raw until TLS is on
	pending []byte        // input not yet handed to go-smtp
	wbuf    []byte        // output line not yet complete
	tlsOn   bool
	greeted bool
	inEHLO  bool // swallowing go-smtp's EHLO lines
	closing bool // a 421 went out
	midLine bool // the last input read ended inside a long line
}

func newGconn(raw net.Conn, cfg *tls.Config) *gconn {
	return &gconn{raw: raw, cfg: cfg, cur: raw, br: bufio.NewReaderSize(raw, 4096)}
}

// TLS reports whether STARTTLS completed on this connection.
func (c *gconn) TLS() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tlsOn
}

func (c *gconn) Read(p []byte) (int, error) {
	for {
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		}
		c.mu.Lock()
		on, cur := c.tlsOn, c.cur
		c.mu.Unlock()
		if on {
			return cur.Read(p)
		}
		line, err := c.br.ReadSlice('\n')
		if len(line) == 0 && err != nil {
			return 0, err
		}
		whole := !c.midLine
		c.midLine = err == bufio.ErrBufferFull
		if err == nil && whole && isStartTLS(line) {
			if err := c.startTLS(); err != nil {
				return 0, err
			}
			continue
		}
		c.pending = append(c.pending[:0], line...)
	}
}

func isStartTLS(line []byte) bool {
	return strings.EqualFold(strings.TrimSpace(string(line)), "STARTTLS")
}

func (c *gconn) startTLS() error {
	if c.br.Buffered() > 0 {
		// RFC 3207 section 4.2: nothing may follow STARTTLS in the same
		// flight; what did would be read as if it came over TLS.
		c.br.Discard(c.br.Buffered())
		_, err := c.raw.Write([]byte("454 4.5.0 SMTP protocol violation, no commands allowed to pipeline after STARTTLS, see RFC 3207. " + gsmtp + "\r\n"))
		return err
	}
	if _, err := c.raw.Write([]byte("220 2.0.0 Ready to start TLS\r\n")); err != nil {
		return err
	}
	tc := tls.Server(c.raw, c.cfg)
	c.raw.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.raw.Close()
		return err
	}
	c.raw.SetDeadline(time.Time{})
	c.mu.Lock()
	c.cur, c.tlsOn = tc, true
	c.mu.Unlock()
	return nil
}

func (c *gconn) Write(p []byte) (int, error) {
	c.wbuf = append(c.wbuf, p...)
	var out bytes.Buffer
	for {
		i := bytes.IndexByte(c.wbuf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(c.wbuf[:i+1]), "\r\n")
		c.wbuf = c.wbuf[i+1:]
		for _, l := range c.rewrite(line) {
			out.WriteString(l + "\r\n")
		}
	}
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	if out.Len() > 0 {
		if _, err := cur.Write(out.Bytes()); err != nil {
			return 0, err
		}
	}
	if c.closing {
		cur.Close()
	}
	return len(p), nil
}

// rewrite turns one line go-smtp wrote into what Gmail would have written
// (none, one or several lines).
func (c *gconn) rewrite(line string) []string {
	switch {
	case c.inEHLO:
		if strings.HasPrefix(line, "250 ") {
			c.inEHLO = false
		}
		return nil
	case !c.greeted && strings.HasPrefix(line, "220 "):
		c.greeted = true
		return []string{"220 smtp.gmail.com ESMTP " + gsmtp}
	case strings.HasPrefix(line, "250-Hello "):
		c.inEHLO = true
		return c.ehlo()
	case strings.HasPrefix(line, "250 Hello "): // EHLO with no keywords: never with the fake's settings
		return c.ehlo()
	case strings.HasPrefix(line, "250 2.0.0 Hello "): // HELO
		return []string{"250 smtp.gmail.com at your service"}
	case strings.HasPrefix(line, "250 2.0.0 Roger, accepting mail from"):
		return []string{"250 2.1.0 OK " + gsmtp}
	case strings.HasPrefix(line, "250 2.0.0 I'll make sure"):
		return []string{"250 2.1.5 OK " + gsmtp}
	case line == "235 2.0.0 Authentication succeeded":
		return []string{"235 2.7.0 Accepted"}
	case strings.HasPrefix(line, "354 "):
		return []string{"354 Go ahead " + gsmtp}
	case line == "221 2.0.0 Bye":
		return []string{"221 2.0.0 closing connection " + gsmtp}
	case line == "250 2.0.0 Session reset":
		return []string{"250 2.1.5 Flushed " + gsmtp}
	case line == "250 2.0.0 I have successfully done nothing":
		return []string{"250 2.0.0 OK " + gsmtp}
	case line == "552 5.3.4 Max message size exceeded" || line == "552 5.3.4 Maximum message size exceeded":
		// go-smtp's answers to SIZE= over the limit and to a longer message.
		return replyLines(ReplyMessageTooBig)
	case strings.HasPrefix(line, "421 "):
		c.closing = true
	}
	return []string{line}
}

// ehlo is Gmail's EHLO reply; AUTH is offered only after STARTTLS and
// STARTTLS only before it.
func (c *gconn) ehlo() []string {
	ip := "127.0.0.1"
	if a, ok := c.raw.RemoteAddr().(*net.TCPAddr); ok {
		ip = a.IP.String()
	}
	keys := []string{"SIZE 35882577", "8BITMIME"}
	if c.TLS() {
		keys = append(keys, "AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH")
	} else {
		keys = append(keys, "STARTTLS")
	}
	keys = append(keys, "ENHANCEDSTATUSCODES", "PIPELINING", "CHUNKING", "SMTPUTF8")
	out := []string{"250-smtp.gmail.com at your service, [" + ip + "]"}
	for i, k := range keys {
		sep := "-"
		if i == len(keys)-1 {
			sep = " "
		}
		out = append(out, "250"+sep+k)
	}
	return out
}

func (c *gconn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *gconn) Close() error                       { return c.current().Close() }
func (c *gconn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *gconn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *gconn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *gconn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *gconn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }
