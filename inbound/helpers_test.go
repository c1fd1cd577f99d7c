package inbound

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/tokens"
)

const (
	testMailbox = "helpdesk@contoso.com"
	testAccount = "helpdesk"
)

// fakeTokens hands out tokens in turn: the first Auth gets tokens[0], and
// each Invalidate moves on to the next.
type fakeTokens struct {
	mu          sync.Mutex
	tokens      []string
	next        int
	invalidated int
	refusals    []string // "account protocol reply"
	err         error
}

func (f *fakeTokens) AuthFor(_ context.Context, account, protocol string) (tokens.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return tokens.Credential{}, f.err
	}
	tok := f.tokens[min(f.next, len(f.tokens)-1)]
	return tokens.Credential{SASL: &tokens.XOAuth2{User: testMailbox, Token: tok}, Fingerprint: tokens.Fingerprint(tok)}, nil
}

func (f *fakeTokens) Invalidate(string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated++
	f.next++
}

func (f *fakeTokens) AuthRefused(account, protocol, reply string) tokens.Explanation {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refusals = append(f.refusals, account+" "+protocol+" "+reply)
	return tokens.Explanation{Title: "Microsoft refused the login"}
}

// testTLS is a self-signed certificate for 127.0.0.1 and a pool trusting it.
func testTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outlook.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// fakeUpstream is a scripted Exchange Online (IMAP or POP3) on
// 127.0.0.1:0 with implicit TLS: it checks the XOAUTH2 line, accepts the
// tokens in good, and then serves conn with serve.
type fakeUpstream struct {
	addr  string
	conns atomic.Int32
	good  map[string]bool
	mu    sync.Mutex
	xoa   []string // decoded XOAUTH2 responses seen
}

func (u *fakeUpstream) checkXOAUTH2(b64 string) bool {
	b, err := base64.StdEncoding.DecodeString(b64)
	u.mu.Lock()
	u.xoa = append(u.xoa, string(b))
	u.mu.Unlock()
	if err != nil {
		return false
	}
	user, rest, ok := strings.Cut(string(b), "\x01auth=Bearer ")
	tok, ok2 := strings.CutSuffix(rest, "\x01\x01")
	return ok && ok2 && user == "user="+testMailbox && u.good[tok]
}

func startUpstream(t testing.TB, cfg *tls.Config, good []string, handle func(u *fakeUpstream, c net.Conn, r *bufio.Reader)) *fakeUpstream {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUpstream{addr: ln.Addr().String(), good: map[string]bool{}}
	for _, g := range good {
		u.good[g] = true
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				handle(u, c, bufio.NewReader(c))
			}()
		}
	}()
	return u
}

// imapUpstream logs in with XOAUTH2 (okCode is the tagged OK's response
// code, "" for none) and then serves NOOP, CAPABILITY, APPEND (echoing
// the literal back as a FETCH) and LOGOUT.
func imapUpstream(okCode string) func(u *fakeUpstream, c net.Conn, r *bufio.Reader) {
	return func(u *fakeUpstream, c net.Conn, r *bufio.Reader) {
		fmt.Fprintf(c, "* OK The Microsoft Exchange IMAP4 service is ready.\r\n")
		line, _ := r.ReadString('\n')
		f := strings.Fields(line)
		if len(f) != 4 || !strings.EqualFold(f[1], "AUTHENTICATE") || f[2] != "XOAUTH2" {
			fmt.Fprintf(c, "* BAD unexpected %q\r\n", line)
			return
		}
		if !u.checkXOAUTH2(f[3]) {
			fmt.Fprintf(c, "%s NO AUTHENTICATE failed.\r\n", f[0])
			return
		}
		fmt.Fprintf(c, "%s OK %sAUTHENTICATE completed.\r\n", f[0], okCode)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			if len(f) < 2 {
				fmt.Fprintf(c, "* BAD\r\n")
				continue
			}
			switch strings.ToUpper(f[1]) {
			case "CAPABILITY":
				fmt.Fprintf(c, "* CAPABILITY IMAP4 IMAP4rev1 IDLE MOVE UIDPLUS COMPRESS=DEFLATE\r\n%s OK CAPABILITY completed.\r\n", f[0])
			case "NOOP":
				fmt.Fprintf(c, "%s OK NOOP completed.\r\n", f[0])
			case "APPEND":
				var n int
				fmt.Sscanf(f[len(f)-1], "{%d}", &n)
				fmt.Fprintf(c, "+ Ready for additional command text.\r\n")
				buf := make([]byte, n)
				if _, err := readFull(r, buf); err != nil {
					return
				}
				r.ReadString('\n')
				fmt.Fprintf(c, "* 1 FETCH (BODY[] {%d}\r\n", n)
				c.Write(buf)
				fmt.Fprintf(c, ")\r\n%s OK APPEND completed.\r\n", f[0])
			case "LOGOUT":
				fmt.Fprintf(c, "* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n%s OK LOGOUT completed.\r\n", f[0])
				return
			default:
				fmt.Fprintf(c, "%s BAD Command Error. 12\r\n", f[0])
			}
		}
	}
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// pop3Upstream logs in with AUTH XOAUTH2 and serves STAT, RETR 1 and QUIT.
func pop3Upstream(msg string) func(u *fakeUpstream, c net.Conn, r *bufio.Reader) {
	return func(u *fakeUpstream, c net.Conn, r *bufio.Reader) {
		fmt.Fprintf(c, "+OK The Microsoft Exchange POP3 service is ready.\r\n")
		line, _ := r.ReadString('\n')
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "AUTH" || f[1] != "XOAUTH2" {
			fmt.Fprintf(c, "-ERR unexpected %q\r\n", line)
			return
		}
		if !u.checkXOAUTH2(f[2]) {
			fmt.Fprintf(c, "-ERR Authentication failure: unknown user name or bad password.\r\n")
			return
		}
		fmt.Fprintf(c, "+OK User successfully authenticated.\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.ToUpper(strings.TrimSpace(line)) {
			case "STAT":
				fmt.Fprintf(c, "+OK 1 %d\r\n", len(msg))
			case "RETR 1":
				fmt.Fprintf(c, "+OK\r\n%s.\r\n", msg)
			case "QUIT":
				fmt.Fprintf(c, "+OK Microsoft Exchange Server POP3 server signing off.\r\n")
				return
			default:
				fmt.Fprintf(c, "-ERR Protocol error. 14\r\n")
			}
		}
	}
}

// writeUsers writes a users file of "user:hash[:account]" lines (bcrypt at
// its lowest cost, for speed).
func writeUsers(t testing.TB, lines ...string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		user, rest, _ := strings.Cut(l, ":")
		pass, account, hasAccount := strings.Cut(rest, ":")
		h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(user + ":" + string(h))
		if hasAccount {
			b.WriteString(":" + account)
		}
		b.WriteString("\n")
	}
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// harness is a Server with one user (helpdesk@contoso.com / "s3cret pw",
// and "app" / "apppw" for account helpdesk) and its listeners.
type harness struct {
	srv              *Server
	imapAddr, popAdr string
	toks             *fakeTokens
	logins           chan string
	sessions         chan Session
	logs             *strings.Builder
	logMu            *sync.Mutex
}

type syncWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func newHarness(t testing.TB, pool *x509.CertPool, imapUp, popUp string, toks *fakeTokens, tune func(*Options)) *harness {
	t.Helper()
	users, err := LoadUsers(writeUsers(t, testMailbox+":s3cret pw", "app:apppw:"+testAccount), map[string]string{testAccount: testMailbox, "other": "x@y.z"})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{toks: toks, logins: make(chan string, 100), sessions: make(chan Session, 10), logs: &strings.Builder{}, logMu: &sync.Mutex{}}
	opts := Options{Users: users, Tokens: toks, AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")},
		IMAPUpstream: imapUp, POP3Upstream: popUp, RootCAs: pool, LoginTimeout: 10 * time.Second, DialTimeout: 5 * time.Second,
		UpstreamTimeout: 5 * time.Second, CloseGrace: 300 * time.Millisecond,
		Events: Events{Login: func(p, r string) { h.logins <- p + " " + r }, Session: func(s Session) { h.sessions <- s }},
		Logger: slog.New(slog.NewTextHandler(syncWriter{h.logMu, h.logs}, nil))}
	if tune != nil {
		tune(&opts)
	}
	h.srv = New(opts)
	iln, _ := net.Listen("tcp", "127.0.0.1:0")
	pln, _ := net.Listen("tcp", "127.0.0.1:0")
	h.imapAddr, h.popAdr = iln.Addr().String(), pln.Addr().String()
	go h.srv.ServeIMAP(iln)
	go h.srv.ServePOP3(pln)
	t.Cleanup(func() { h.srv.Close() })
	return h
}

func (h *harness) log() string {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	return h.logs.String()
}

// client is a line-oriented test client over TCP.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading a line: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// expect reads a line and checks its prefix.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	l := c.line()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("got %q, want %q…", l, prefix)
	}
	return l
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// imap and pop3 serve one client connection as the accept loop does.
func (h *harness) imap(c net.Conn) { h.srv.serveConn(c, IMAP, func() { c.Close() }) }
func (h *harness) pop3(c net.Conn) { h.srv.serveConn(c, POP3, func() { c.Close() }) }
