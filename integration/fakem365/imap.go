package fakem365

import (
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
)

// Exchange Online's IMAP refusals (shared/M365.md: "Refusal: `NO
// AUTHENTICATE failed.`"). LOGIN with basic auth off answers the same way
// for its command (unconfirmed wording).
var (
	errIMAPAuthFailed  = &imap.Error{Type: imap.StatusResponseTypeNo, Text: "AUTHENTICATE failed."}
	errIMAPLoginFailed = &imap.Error{Type: imap.StatusResponseTypeNo, Text: "LOGIN failed."}
)

// IMAP is a fake outlook.office365.com:993: implicit TLS, XOAUTH2 only
// (AUTHENTICATE with or without SASL-IR), one INBOX per mailbox from the
// shared Mailstore. A token must be one the fake Entra issued with the
// delegated IMAP.AccessAsUser.All for the user= mailbox, or the app-only
// IMAP.AccessAsApp.
type IMAP struct {
	Addr  string
	Entra *Entra
	Store *Mailstore

	server *imapserver.Server
	ln     net.Listener
	auths  atomic.Int64
	authOK atomic.Int64
}

func newIMAPAt(entra *Entra, ca *CA, store *Mailstore, addr string) (*IMAP, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &IMAP{Addr: ln.Addr().String(), Entra: entra, Store: store}
	s.server = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &imapSession{s: s}, nil, nil
		},
		// Exchange Online offers IMAP4rev1 with these (its CAPABILITY also
		// lists ID and CHILDREN, which go-imap's server does not implement).
		Caps:   imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapNamespace: {}, imap.CapMove: {}},
		Logger: quietLog{},
	})
	s.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12})
	go s.server.Serve(s.ln)
	return s, nil
}

// Close stops the server and drops every connection.
func (s *IMAP) Close() error {
	err := s.server.Close()
	s.ln.Close() // in case Serve had not started yet
	return err
}

// Auths is how many AUTHENTICATE attempts were made, and how many succeeded.
func (s *IMAP) Auths() (attempts, ok int) { return int(s.auths.Load()), int(s.authOK.Load()) }

// Connections reports how many authenticated IMAP connections mailbox has
// open now, and the most it had at once.
func (s *IMAP) Connections(mailbox string) (open, peak int) {
	return s.Store.Connections(mailbox, ProtoIMAP)
}

// imapSession is one connection: unauthenticated until XOAUTH2 succeeds,
// then the mailbox's imapmemserver session.
type imapSession struct {
	*imapmemserver.UserSession // nil before authentication
	s                          *IMAP
	closed                     func()
	selected                   bool
	readOnly                   bool // the mailbox was opened with EXAMINE
}

var _ imapserver.SessionSASL = (*imapSession)(nil)

func (x *imapSession) Close() error {
	if x.closed != nil {
		x.closed()
	}
	if x.UserSession != nil {
		return x.UserSession.Close()
	}
	return nil
}

// Login is refused: basic authentication is off in Exchange Online.
func (x *imapSession) Login(string, string) error { return errIMAPLoginFailed }

func (x *imapSession) AuthenticateMechanisms() []string { return []string{"PLAIN", "XOAUTH2"} }

func (x *imapSession) Authenticate(mech string) (sasl.Server, error) {
	x.s.auths.Add(1)
	if mech != "XOAUTH2" {
		return nil, errIMAPAuthFailed // PLAIN is basic auth
	}
	return &xoauth2Check{entra: x.s.Entra, user: "IMAP.AccessAsUser.All", app: "IMAP.AccessAsApp",
		fail: errIMAPAuthFailed, ok: func(mailbox string) {
			x.s.authOK.Add(1)
			x.s.Store.mu.Lock()
			b := x.s.Store.box(mailbox)
			x.s.Store.mu.Unlock()
			x.UserSession = imapmemserver.NewUserSession(b.user)
			x.closed = x.s.Store.opened(mailbox, ProtoIMAP)
		}}, nil
}

// Select closes the view of a mailbox selected before (imapmemserver
// leaves it open).
func (x *imapSession) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	if x.selected {
		x.Unselect()
	}
	d, err := x.UserSession.Select(name, options)
	x.selected = err == nil
	x.readOnly = options != nil && options.ReadOnly
	return d, err
}

// Fetch after EXAMINE leaves \Seen alone (RFC 3501 6.3.2: nothing in a
// read-only mailbox changes); imapmemserver would set it for BODY[].
func (x *imapSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if x.readOnly {
		// In place: imapserver knows RFC822 from BODY[] by the pointer.
		for _, bs := range options.BodySection {
			bs.Peek = true
		}
	}
	return x.UserSession.Fetch(w, numSet, options)
}

func (x *imapSession) Unselect() error {
	x.selected = false
	return x.UserSession.Unselect()
}

// xoauth2Check is the server side of XOAUTH2 for IMAP and POP3:
// "user=<mailbox>\x01auth=Bearer <token>\x01\x01", after an empty challenge
// when there was no initial response. The token must carry permission user
// (delegated, for the user= mailbox) or app (app-only); any refusal is fail.
type xoauth2Check struct {
	entra     *Entra
	user, app string
	fail      error
	ok        func(mailbox string)
	prompted  bool
}

func (c *xoauth2Check) Next(resp []byte) ([]byte, bool, error) {
	if len(resp) == 0 && !c.prompted {
		c.prompted = true
		// nil, not empty: go-imap writes "+ " then, as Exchange does,
		// where an empty challenge would be "+ =".
		return nil, false, nil
	}
	mailbox, ok := checkXOAUTH2(c.entra, resp, c.user, c.app)
	if !ok {
		return nil, false, c.fail
	}
	c.ok(mailbox)
	return nil, true, nil
}

// checkXOAUTH2 reads an XOAUTH2 response and reports the mailbox it may
// open: the token must be the fake Entra's, unexpired, and carry the
// delegated permission user for the user= mailbox, or the app-only app
// (the service principal is taken to have the mailbox permission).
func checkXOAUTH2(entra *Entra, resp []byte, user, app string) (string, bool) {
	var mailbox, bearer string
	for _, kv := range strings.Split(string(resp), "\x01") {
		switch {
		case strings.HasPrefix(kv, "user="):
			mailbox = kv[len("user="):]
		case strings.HasPrefix(kv, "auth=Bearer "):
			bearer = kv[len("auth=Bearer "):]
		}
	}
	g, ok := entra.CheckAccess(bearer)
	switch {
	case mailbox == "" || !ok:
		return "", false
	case g.AppOnly:
		return mailbox, contains(g.Roles, app)
	default:
		return mailbox, strings.EqualFold(g.UPN, mailbox) && contains(g.Scopes, user)
	}
}
