package fakem365

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Exchange Online's POP3 replies. The refusal is shared/M365.md's ("Refusal:
// `-ERR Authentication failure: unknown user name or bad password.`"); the
// greeting, success and sign-off texts are Exchange's usual ones
// (unconfirmed wording).
const (
	pop3Greeting    = "+OK The Microsoft Exchange POP3 service is ready."
	pop3AuthFailed  = "-ERR Authentication failure: unknown user name or bad password."
	pop3AuthOK      = "+OK User successfully authenticated."
	pop3SigningOff  = "+OK Microsoft Exchange Server POP3 server signing off."
	pop3NoSuchMsg   = "-ERR The specified message is out of range."
	pop3BadCommand  = "-ERR Protocol error."
	pop3NotAuthYet  = "-ERR Command is not valid in this state."
	pop3IdleTimeout = 10 * time.Minute // RFC 1939 3: at least 10 minutes
)

// POP3 is a fake outlook.office365.com:995: implicit TLS, AUTH XOAUTH2 only
// (RFC 5034, initial response or after "+ "), the INBOX of the shared
// Mailstore (RFC 1939). A token must be one the fake Entra issued with the
// delegated POP.AccessAsUser.All for the user= mailbox, or the app-only
// POP.AccessAsApp. Deletions take effect at QUIT.
type POP3 struct {
	Addr  string
	Entra *Entra
	Store *Mailstore

	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	auths  atomic.Int64
	authOK atomic.Int64
}

func newPOP3At(entra *Entra, ca *CA, store *Mailstore, addr string) (*POP3, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &POP3{Addr: ln.Addr().String(), Entra: entra, Store: store, conns: map[net.Conn]struct{}{},
		ln: tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12})}
	go s.serve()
	return s, nil
}

func (s *POP3) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			(&pop3Session{s: s, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}).run()
		}()
	}
}

// Close stops the server and drops every connection.
func (s *POP3) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Auths is how many AUTH attempts were made, and how many succeeded.
func (s *POP3) Auths() (attempts, ok int) { return int(s.auths.Load()), int(s.authOK.Load()) }

// Connections reports how many authenticated POP3 connections mailbox has
// open now, and the most it had at once.
func (s *POP3) Connections(mailbox string) (open, peak int) {
	return s.Store.Connections(mailbox, ProtoPOP3)
}

type pop3Session struct {
	s *POP3
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer

	mailbox string          // "" until AUTH succeeds
	msgs    []storedMessage // the maildrop, fixed at AUTH (RFC 1939 5)
	deleted map[int]bool    // 1-based message numbers marked by DELE
	closed  func()          // counts the connection closed
}

var errPOP3Quit = errors.New("quit")

func (p *pop3Session) run() {
	defer func() {
		if p.closed != nil {
			p.closed()
		}
	}()
	p.reply(pop3Greeting)
	if p.w.Flush() != nil {
		return
	}
	for {
		p.c.SetReadDeadline(time.Now().Add(pop3IdleTimeout))
		line, err := p.readLine()
		if err != nil {
			return // no QUIT: nothing is deleted (RFC 1939 6)
		}
		cmd, arg, _ := strings.Cut(line, " ")
		if err := p.command(strings.ToUpper(cmd), arg); err != nil {
			p.w.Flush()
			return
		}
		if p.w.Flush() != nil {
			return
		}
	}
}

func (p *pop3Session) readLine() (string, error) {
	line, err := p.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (p *pop3Session) reply(format string, args ...any) {
	fmt.Fprintf(p.w, format+"\r\n", args...)
}

func (p *pop3Session) command(cmd, arg string) error {
	switch cmd {
	case "CAPA":
		// Exchange Online's list (TOP, UIDL, SASL PLAIN XOAUTH2, USER).
		p.reply("+OK")
		p.reply("TOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.")
		return nil
	case "NOOP":
		if p.mailbox == "" {
			p.reply(pop3NotAuthYet)
		} else {
			p.reply("+OK")
		}
		return nil
	case "QUIT":
		if p.mailbox != "" {
			p.update()
		}
		p.reply(pop3SigningOff)
		return errPOP3Quit
	}
	if p.mailbox == "" {
		return p.authorization(cmd, arg)
	}
	return p.transaction(cmd, arg)
}

// authorization handles the AUTHORIZATION state: only AUTH XOAUTH2 opens
// the maildrop; USER is taken and PASS refused (basic auth is off).
func (p *pop3Session) authorization(cmd, arg string) error {
	switch cmd {
	case "USER":
		p.reply("+OK")
	case "PASS":
		p.reply(pop3AuthFailed)
	case "AUTH":
		return p.auth(arg)
	default:
		p.reply(pop3NotAuthYet)
	}
	return nil
}

func (p *pop3Session) auth(arg string) error {
	mech, ir, hasIR := strings.Cut(arg, " ")
	if mech == "" {
		// RFC 5034 4: AUTH without a mechanism may list them; Exchange does.
		p.reply("+OK\r\nPLAIN\r\nXOAUTH2\r\n.")
		return nil
	}
	p.s.auths.Add(1)
	if !strings.EqualFold(mech, "XOAUTH2") {
		p.reply(pop3AuthFailed)
		return nil
	}
	if !hasIR {
		p.reply("+ ")
		if err := p.w.Flush(); err != nil {
			return err
		}
		line, err := p.readLine()
		if err != nil {
			return err
		}
		if line == "*" { // RFC 5034 4: the client cancels
			p.reply("-ERR Authentication canceled.")
			return nil
		}
		ir = line
	}
	resp, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ir))
	if err != nil {
		p.reply(pop3AuthFailed)
		return nil
	}
	mailbox, ok := checkXOAUTH2(p.s.Entra, resp, "POP.AccessAsUser.All", "POP.AccessAsApp")
	if !ok {
		p.reply(pop3AuthFailed)
		return nil
	}
	p.s.authOK.Add(1)
	p.mailbox = mailbox
	p.closed = p.s.Store.opened(mailbox, ProtoPOP3)
	p.msgs = p.s.Store.inbox(mailbox)
	p.deleted = map[int]bool{}
	p.reply(pop3AuthOK)
	return nil
}

// transaction handles the TRANSACTION state (RFC 1939 5).
func (p *pop3Session) transaction(cmd, arg string) error {
	switch cmd {
	case "STAT":
		n, size := 0, 0
		for i, m := range p.msgs {
			if !p.deleted[i+1] {
				n++
				size += len(m.data)
			}
		}
		p.reply("+OK %d %d", n, size)
	case "LIST", "UIDL":
		value := func(i int) string {
			if cmd == "LIST" {
				return strconv.Itoa(len(p.msgs[i-1].data))
			}
			return p.uidl(i)
		}
		if arg != "" {
			i, ok := p.number(arg)
			if !ok {
				p.reply(pop3NoSuchMsg)
				return nil
			}
			p.reply("+OK %d %s", i, value(i))
			return nil
		}
		p.reply("+OK")
		for i := range p.msgs {
			if !p.deleted[i+1] {
				p.reply("%d %s", i+1, value(i+1))
			}
		}
		p.reply(".")
	case "RETR":
		i, ok := p.number(arg)
		if !ok {
			p.reply(pop3NoSuchMsg)
			return nil
		}
		data := p.msgs[i-1].data
		p.reply("+OK %d octets", len(data))
		writeDotStuffed(p.w, data)
	case "TOP":
		num, lines, _ := strings.Cut(arg, " ")
		i, ok := p.number(num)
		n, err := strconv.Atoi(lines)
		if !ok || err != nil || n < 0 {
			p.reply(pop3NoSuchMsg)
			return nil
		}
		p.reply("+OK")
		writeDotStuffed(p.w, top(p.msgs[i-1].data, n))
	case "DELE":
		i, ok := p.number(arg)
		if !ok {
			p.reply(pop3NoSuchMsg)
			return nil
		}
		p.deleted[i] = true
		p.reply("+OK Marked to be deleted.")
	case "RSET":
		clear(p.deleted)
		p.reply("+OK")
	default:
		p.reply(pop3BadCommand)
	}
	return nil
}

// number reads a message number that names a message not marked deleted.
func (p *pop3Session) number(arg string) (int, bool) {
	i, err := strconv.Atoi(strings.TrimSpace(arg))
	if err != nil || i < 1 || i > len(p.msgs) || p.deleted[i] {
		return 0, false
	}
	return i, true
}

// uidl is a message's unique id: stable across sessions (RFC 1939 7).
func (p *pop3Session) uidl(i int) string {
	return fmt.Sprintf("AAMkFAKE%08d", p.msgs[i-1].uid)
}

// update is the UPDATE state: the messages marked by DELE leave the INBOX.
func (p *pop3Session) update() {
	var uids []imap.UID
	for i := range p.deleted {
		uids = append(uids, p.msgs[i-1].uid)
	}
	p.s.Store.remove(p.mailbox, uids)
}

// writeDotStuffed writes data as a multi-line response (RFC 1939 3): lines
// starting with "." get another, and ".\r\n" ends it. Data that does not
// end in CRLF gets one.
func writeDotStuffed(w io.Writer, data []byte) {
	bw := bufio.NewWriter(w)
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]
		if line[0] == '.' {
			bw.WriteByte('.')
		}
		bw.Write(line)
		if len(data) == 0 && !bytes.HasSuffix(line, []byte("\r\n")) {
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString(".\r\n")
	bw.Flush()
}

// top is the header and the first n lines of the body (RFC 1939 7).
func top(data []byte, n int) []byte {
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		return data
	}
	end += 4
	for ; n > 0 && end < len(data); n-- {
		i := bytes.IndexByte(data[end:], '\n')
		if i < 0 {
			return data
		}
		end += i + 1
	}
	return data[:end]
}
