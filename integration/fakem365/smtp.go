package fakem365

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Stage names a point of an SMTP transaction where a fault can be injected.
type Stage string

const (
	StageMail Stage = "MAIL"
	StageRcpt Stage = "RCPT"
	StageData Stage = "DATA" // the reply after the final dot
)

// Microsoft 365's replies (shared/M365.md).
var (
	ReplyAuthFailed       = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful [FAKE.outlook.office365.com]"}
	ReplyAuthDisabled     = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 139}, Message: "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox."}
	ReplyNotAuthenticated = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 57}, Message: "Client not authenticated to send mail."}
	ReplyThreadLimit      = &smtp.SMTPError{Code: 432, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "STOREDRV.ClientSubmit; sender thread limit exceeded"}
	ReplyRateLimit        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Message submission rate for this client has exceeded the configured limit"}
	ReplyTooManyRcpts     = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	ReplyTempFailure      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 500}, Message: "Server busy. Please try again later."}
)

// ReplySendAsDenied is Microsoft's answer, after the final dot, when the
// mailbox may not send as from.
func ReplySendAsDenied(mailbox, from string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 2, 252},
		Message: fmt.Sprintf("SendAsDenied; %s not allowed to send as %s; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.", mailbox, from)}
}

// Message is one message the fake accepted.
type Message struct {
	Mailbox  string // the authenticated user= of XOAUTH2
	From     string
	To       []string
	UTF8     bool
	Body     smtp.BodyType
	Data     []byte // exactly the bytes received after DATA, dot-unstuffed
	Accepted time.Time
	// MailOptions and RcptOptions (one per To) are the MAIL FROM and RCPT
	// TO parameters as go-smtp read them: what came beside the addresses.
	MailOptions smtp.MailOptions
	RcptOptions []smtp.RcptOptions
}

// SMTP is a fake smtp.office365.com:587.
type SMTP struct {
	Addr  string
	Entra *Entra

	server *smtp.Server
	ln     net.Listener

	conns   atomic.Int64 // connections accepted, ever
	active  atomic.Int64
	peak    atomic.Int64 // most connections open at once
	down    atomic.Bool  // answer 421 4.3.2 at the greeting and close
	stall   atomic.Int64 // > 0: each DATA reads this many bytes, then nothing more
	auths   atomic.Int64
	authOK  atomic.Int64
	counter map[Stage]int

	mu            sync.Mutex
	accepted      Recorder[Message]
	faults        map[Stage]map[int]*smtp.SMTPError // stage -> nth (1-based) -> reply
	nextFaults    map[Stage][]*smtp.SMTPError
	sendAsCheck   bool
	authDisabled  map[string]bool
	maxConcurrent int
	ratePerMinute int
	rateWindow    time.Duration
	refuse        *smtp.SMTPError
	sent          []time.Time
	dropData      int
	delay         time.Duration
	onMessage     func(Message)
	// deliver puts an accepted message into its recipients' INBOXes (the
	// fake's IMAP and POP3 side); nil when there is none.
	deliver func(Message)
}

// NewSMTP starts a fake submission server on 127.0.0.1 that checks XOAUTH2
// tokens against entra and presents a certificate from ca.
func NewSMTP(entra *Entra, ca *CA) (*SMTP, error) { return newSMTPAt(entra, ca, "") }

func newSMTPAt(entra *Entra, ca *CA, addr string) (*SMTP, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &SMTP{
		Addr:         ln.Addr().String(),
		Entra:        entra,
		counter:      map[Stage]int{},
		faults:       map[Stage]map[int]*smtp.SMTPError{},
		nextFaults:   map[Stage][]*smtp.SMTPError{},
		sendAsCheck:  true,
		authDisabled: map[string]bool{},
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &fakeSession{s: s, conn: c}, nil
	}))
	srv.Domain = "FAKE.outlook.office365.com"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{ca.Server}, MinVersion: tls.VersionTLS12}
	srv.MaxMessageBytes = 150 << 20 // SIZE 157286400
	// Exchange Online's line limit is not documented (M365.md); long HTML
	// lines are common, so the fake takes up to 16 KiB, not go-smtp's 2,000.
	srv.MaxLineLength = 16 << 10
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.EnableBINARYMIME = true
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = quietLog{}
	s.server = srv
	s.ln = &countingListener{Listener: ln, s: s}
	go srv.Serve(s.ln)
	return s, nil
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

// Close stops the server and drops every connection.
func (s *SMTP) Close() error { return s.server.Close() }

// Messages returns a copy of what was accepted so far.
func (s *SMTP) Messages() []Message { return s.accepted.All() }

// WaitMessages blocks until at least n messages were accepted or the timeout
// passes, and returns what was accepted.
func (s *SMTP) WaitMessages(n int, timeout time.Duration) []Message {
	return s.accepted.Wait(n, timeout)
}

// Connections is how many TCP connections were accepted.
func (s *SMTP) Connections() int { return int(s.conns.Load()) }

// Auths is how many AUTH attempts were made, and how many succeeded.
func (s *SMTP) Auths() (attempts, ok int) { return int(s.auths.Load()), int(s.authOK.Load()) }

// ReplyAt makes the nth (1-based, counted over the server's life) command of
// stage answer with reply.
func (s *SMTP) ReplyAt(stage Stage, nth int, reply *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults[stage] == nil {
		s.faults[stage] = map[int]*smtp.SMTPError{}
	}
	s.faults[stage][nth] = reply
}

// FailNext makes the next commands of stage answer with replies, in order.
func (s *SMTP) FailNext(stage Stage, replies ...*smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextFaults[stage] = append(s.nextFaults[stage], replies...)
}

// SetSendAsCheck switches the SendAsDenied check (on by default): the
// envelope sender must be the authenticated mailbox.
func (s *SMTP) SetSendAsCheck(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendAsCheck = on
}

// SetAuthDisabled makes AUTH for mailbox answer 535 5.7.139.
func (s *SMTP) SetAuthDisabled(mailbox string, disabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authDisabled[strings.ToLower(mailbox)] = disabled
}

// SetMaxConcurrent answers MAIL with 432 4.3.2 while more than n connections
// are open (0: no limit).
func (s *SMTP) SetMaxConcurrent(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxConcurrent = n
}

// SetRatePerMinute answers MAIL with 421 4.4.2 once n messages were accepted
// in the last minute (0: no limit).
func (s *SMTP) SetRatePerMinute(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ratePerMinute = n
}

// SetRateWindow changes the window of SetRatePerMinute (default a minute),
// so tests need not wait a minute for throttling to pass.
func (s *SMTP) SetRateWindow(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateWindow = d
}

// SetRefuse answers every MAIL with reply until it is set back to nil.
func (s *SMTP) SetRefuse(reply *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = reply
}

// DropDuringData closes the connection in the middle of each of the next n
// DATA transfers, before anything is recorded.
func (s *SMTP) DropDuringData(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropData += n
}

// SetDelay makes every MAIL, RCPT and DATA reply wait d.
func (s *SMTP) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// fault returns the injected reply for the next command of stage, if any,
// and the command's number. Caller holds s.mu.
func (s *SMTP) fault(stage Stage) (*smtp.SMTPError, int) {
	s.counter[stage]++
	n := s.counter[stage]
	if q := s.nextFaults[stage]; len(q) > 0 {
		s.nextFaults[stage] = q[1:]
		return q[0], n
	}
	if r, ok := s.faults[stage][n]; ok {
		return r, n
	}
	return nil, n
}

func (s *SMTP) wait() {
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

type countingListener struct {
	net.Listener
	s *SMTP
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.conns.Add(1)
	n := l.s.active.Add(1)
	for p := l.s.peak.Load(); n > p && !l.s.peak.CompareAndSwap(p, n); p = l.s.peak.Load() {
	}
	cc := &countedConn{Conn: c, s: l.s}
	if l.s.down.Load() {
		// Exchange Online under load or in an incident (M365.md).
		cc.Write([]byte("421 4.3.2 Service not available, closing transmission channel\r\n"))
		cc.Close()
		return l.Accept()
	}
	return cc, nil
}

// SetDown makes every new connection get 421 4.3.2 at the greeting and be
// closed, as an Exchange Online outage looks to a client; false ends it.
func (s *SMTP) SetDown(down bool) { s.down.Store(down) }

// StallDuringData makes each DATA read n bytes of the message and then
// stop reading (a peer that hangs mid-transfer); 0 ends it. The session
// stays open until the client gives up.
func (s *SMTP) StallDuringData(n int) { s.stall.Store(int64(n)) }

// PeakConnections is the most connections that were open at once.
func (s *SMTP) PeakConnections() int { return int(s.peak.Load()) }

type countedConn struct {
	net.Conn
	s    *SMTP
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.s.active.Add(-1) })
	return c.Conn.Close()
}

type fakeSession struct {
	s       *SMTP
	conn    *smtp.Conn
	mailbox string // authenticated as
	from    string
	opts    smtp.MailOptions
	to      []string
	rcptOpt []smtp.RcptOptions
}

func (f *fakeSession) Reset()        { f.from, f.to, f.rcptOpt, f.opts = "", nil, nil, smtp.MailOptions{} }
func (f *fakeSession) Logout() error { return nil }

func (f *fakeSession) AuthMechanisms() []string { return []string{"LOGIN", "XOAUTH2"} }

func (f *fakeSession) Auth(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 7, 4}, Message: "Unrecognized authentication type"}
	}
	f.s.auths.Add(1)
	return &xoauth2Server{f: f}, nil
}

// xoauth2Server checks "user=<mailbox>\x01auth=Bearer <token>\x01\x01".
// Microsoft answers a bad token with 535 5.7.3 and no JSON challenge.
type xoauth2Server struct {
	f        *fakeSession
	prompted bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if len(resp) == 0 && !x.prompted {
		x.prompted = true
		return []byte{}, false, nil // empty 334 challenge, as Microsoft sends
	}
	fields := strings.Split(string(resp), "\x01")
	var user, bearer string
	for _, kv := range fields {
		switch {
		case strings.HasPrefix(kv, "user="):
			user = kv[len("user="):]
		case strings.HasPrefix(kv, "auth=Bearer "):
			bearer = kv[len("auth=Bearer "):]
		}
	}
	s := x.f.s
	s.mu.Lock()
	disabled := s.authDisabled[strings.ToLower(user)]
	s.mu.Unlock()
	g, ok := s.Entra.CheckAccess(bearer)
	switch {
	case user == "" || !ok:
		return nil, false, ReplyAuthFailed
	case !g.AppOnly && !strings.EqualFold(g.UPN, user):
		return nil, false, ReplyAuthFailed
	case disabled:
		return nil, false, ReplyAuthDisabled
	}
	s.authOK.Add(1)
	x.f.mailbox = user
	return nil, true, nil
}

func (f *fakeSession) Mail(from string, opts *smtp.MailOptions) error {
	f.s.wait()
	if f.mailbox == "" {
		return ReplyNotAuthenticated
	}
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, _ := s.fault(StageMail); r != nil {
		return r
	}
	if s.refuse != nil {
		return s.refuse
	}
	if s.maxConcurrent > 0 && s.active.Load() > int64(s.maxConcurrent) {
		return ReplyThreadLimit
	}
	if s.ratePerMinute > 0 {
		window := s.rateWindow
		if window == 0 {
			window = time.Minute
		}
		cut := time.Now().Add(-window)
		for len(s.sent) > 0 && s.sent[0].Before(cut) {
			s.sent = s.sent[1:]
		}
		if len(s.sent) >= s.ratePerMinute {
			return ReplyRateLimit
		}
	}
	f.from = from
	if opts != nil {
		f.opts = *opts
	}
	return nil
}

func (f *fakeSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	f.s.wait()
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, _ := s.fault(StageRcpt); r != nil {
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

func (f *fakeSession) Data(r io.Reader) error {
	s := f.s
	s.mu.Lock()
	drop := s.dropData > 0
	if drop {
		s.dropData--
	}
	s.mu.Unlock()
	if drop {
		io.CopyN(io.Discard, r, 16)
		f.conn.Conn().Close()
		return io.ErrUnexpectedEOF
	}
	if n := s.stall.Load(); n > 0 {
		io.CopyN(io.Discard, r, n)
		// Read nothing more for a minute (or until the stall is lifted).
		for end := time.Now().Add(time.Minute); time.Now().Before(end) && s.stall.Load() > 0; {
			time.Sleep(50 * time.Millisecond)
		}
		f.conn.Conn().Close()
		return io.ErrUnexpectedEOF
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	f.s.wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if rep, _ := s.fault(StageData); rep != nil {
		return rep
	}
	if s.sendAsCheck && !strings.EqualFold(f.from, f.mailbox) {
		return ReplySendAsDenied(f.mailbox, f.from)
	}
	id := randomToken("")
	msg := Message{
		Mailbox: f.mailbox, From: f.from, To: append([]string(nil), f.to...),
		UTF8: f.opts.UTF8, Body: f.opts.Body, Data: buf.Bytes(), Accepted: time.Now(),
		MailOptions: f.opts, RcptOptions: append([]smtp.RcptOptions(nil), f.rcptOpt...),
	}
	s.sent = append(s.sent, time.Now())
	if s.deliver != nil {
		s.deliver(msg)
	}
	if s.onMessage != nil {
		go s.onMessage(msg)
	}
	s.accepted.Add(msg)
	// go-smtp writes an *SMTPError's code as is, which lets the fake answer
	// with Microsoft's 250 text.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message: fmt.Sprintf("OK <%s@FAKE.outlook.office365.com> [Hostname=FAKE.outlook.office365.com]", id)}
}
