package fakegoogle

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
)

// Stage names a point of an SMTP session where a fault can be injected.
type Stage string

const (
	StageAuth Stage = "AUTH" // the reply to the client's credentials
	StageMail Stage = "MAIL"
	StageRcpt Stage = "RCPT"
	StageData Stage = "DATA" // the reply after the final dot (or BDAT LAST)
)

// MaxMessageBytes is the SIZE smtp.gmail.com announces.
const MaxMessageBytes = 35882577

// Message is one message the fake accepted.
type Message struct {
	Mailbox  string // the authenticated user
	From     string
	To       []string
	Data     []byte // exactly the bytes received, dot-unstuffed
	Accepted time.Time
	// MailOptions and RcptOptions (one per To) are the MAIL FROM and RCPT
	// TO parameters as go-smtp read them.
	MailOptions smtp.MailOptions
	RcptOptions []smtp.RcptOptions
}

// SMTP is a fake smtp.gmail.com:587: STARTTLS before AUTH, XOAUTH2 and
// OAUTHBEARER checked against the tokens the fake OAuth issued, Gmail's
// texts. It records what it accepts and rewrites nothing.
type SMTP struct {
	Addr  string
	OAuth *OAuth

	server *smtp.Server
	tlsCfg *tls.Config
	conns  atomic.Int64
	auths  atomic.Int64
	authOK atomic.Int64

	mu       sync.Mutex
	accepted fakem365.Recorder[Message]
	faults   map[Stage][]*smtp.SMTPError
}

// NewSMTP starts a fake smtp.gmail.com on 127.0.0.1 with a random port that
// checks tokens against o and presents ca's server certificate.
func NewSMTP(o *OAuth, ca *fakem365.CA) (*SMTP, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &SMTP{
		Addr:   ln.Addr().String(),
		OAuth:  o,
		tlsCfg: &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12},
		faults: map[Stage][]*smtp.SMTPError{},
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		g, _ := c.Conn().(*gconn)
		return &session{s: s, conn: g}, nil
	}))
	srv.Domain = "smtp.gmail.com"
	// gconn does STARTTLS; go-smtp must not, and must let AUTH through
	// (the session refuses it until gconn reports TLS).
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = MaxMessageBytes
	srv.EnableSMTPUTF8 = true
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = quietLog{}
	s.server = srv
	go srv.Serve(&gListener{Listener: ln, s: s})
	return s, nil
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

type gListener struct {
	net.Listener
	s *SMTP
}

func (l *gListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.conns.Add(1)
	return newGconn(c, l.s.tlsCfg), nil
}

// Close stops the server and drops every connection.
func (s *SMTP) Close() error { return s.server.Close() }

// Messages returns a copy of what was accepted so far.
func (s *SMTP) Messages() []Message { return s.accepted.All() }

// WaitMessages blocks until at least n messages were accepted or the
// timeout passes, and returns what was accepted.
func (s *SMTP) WaitMessages(n int, timeout time.Duration) []Message {
	return s.accepted.Wait(n, timeout)
}

// Connections is how many TCP connections were accepted.
func (s *SMTP) Connections() int { return int(s.conns.Load()) }

// Auths is how many AUTH exchanges reached the credentials, and how many
// succeeded.
func (s *SMTP) Auths() (attempts, ok int) { return int(s.auths.Load()), int(s.authOK.Load()) }

// FailNext makes the next commands of stage answer with replies, in order
// (one reply per command). A 421 also closes the connection.
func (s *SMTP) FailNext(stage Stage, replies ...*smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[stage] = append(s.faults[stage], replies...)
}

// fault pops the injected reply for stage, if any.
func (s *SMTP) fault(stage Stage) *smtp.SMTPError {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[stage]
	if len(q) == 0 {
		return nil
	}
	s.faults[stage] = q[1:]
	return wire(q[0])
}

func (s *SMTP) record(m Message) { s.accepted.Add(m) }

type session struct {
	s       *SMTP
	conn    *gconn
	mailbox string // authenticated as
	from    string
	opts    smtp.MailOptions
	to      []string
	rcptOpt []smtp.RcptOptions
}

func (f *session) Reset()        { f.from, f.to, f.rcptOpt, f.opts = "", nil, nil, smtp.MailOptions{} }
func (f *session) Logout() error { return nil }

// AuthMechanisms is what go-smtp would list; gconn writes Gmail's list.
func (f *session) AuthMechanisms() []string {
	return []string{"LOGIN", "PLAIN", "XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER", "XOAUTH"}
}

func (f *session) Auth(mech string) (sasl.Server, error) {
	if !f.conn.TLS() {
		return nil, wire(ReplyStartTLSFirst)
	}
	switch mech {
	case "XOAUTH2":
		return &xoauth2Server{f: f}, nil
	case "OAUTHBEARER":
		return &oauthBearerServer{f: f}, nil
	case "LOGIN":
		return &loginServer{f: f}, nil
	case "PLAIN", "PLAIN-CLIENTTOKEN", "XOAUTH":
		// The fake knows no passwords (Gmail's would be app passwords).
		return &refuseServer{f: f}, nil
	}
	return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 7, 4}, Message: "Unrecognized authentication type. " + gsmtp}
}

// credentials is called once the client has sent its credentials: it
// counts the attempt and applies an injected AUTH fault.
func (f *session) credentials() error {
	f.s.auths.Add(1)
	if r := f.s.fault(StageAuth); r != nil {
		return r
	}
	return nil
}

func (f *session) accept(user string) {
	f.s.authOK.Add(1)
	f.mailbox = user
}

func (f *session) Mail(from string, opts *smtp.MailOptions) error {
	switch {
	case !f.conn.TLS():
		return wire(ReplyStartTLSFirst)
	case f.mailbox == "":
		return wire(ReplyAuthRequired)
	}
	if r := f.s.fault(StageMail); r != nil {
		return r
	}
	f.from = from
	if opts != nil {
		f.opts = *opts
	}
	return nil
}

func (f *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if r := f.s.fault(StageRcpt); r != nil {
		return r
	}
	f.to = append(f.to, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	f.rcptOpt = append(f.rcptOpt, o)
	return nil
}

func (f *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	if rep := f.s.fault(StageData); rep != nil {
		return rep
	}
	now := time.Now()
	f.s.record(Message{
		Mailbox: f.mailbox, From: f.from, To: append([]string(nil), f.to...),
		Data: buf.Bytes(), Accepted: now,
		MailOptions: f.opts, RcptOptions: append([]smtp.RcptOptions(nil), f.rcptOpt...),
	})
	// go-smtp writes an *SMTPError's code as it is, which lets the fake
	// answer with Gmail's 250 text.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message: fmt.Sprintf("OK  %d %s", now.Unix(), gsmtp)}
}
