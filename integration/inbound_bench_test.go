package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// Benchmarks of the IMAP proxy against a direct XOAUTH2 session with the
// fake Microsoft 365, with one raw IMAP client for both sides.

// imapConn is a minimal IMAP client: lines, literals skipped or counted.
type imapConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialIMAPProxy(tb testing.TB, addr string) *imapConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	return greet(tb, c)
}

func dialIMAPDirect(tb testing.TB, h *harness) *imapConn {
	pem, err := os.ReadFile(h.cfg.Upstream.CAFile)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	host, _ := hostPort(tb, h.fake.IMAP.Addr)
	c, err := tls.Dial("tcp", h.fake.IMAP.Addr, &tls.Config{RootCAs: pool, ServerName: host})
	if err != nil {
		tb.Fatal(err)
	}
	return greet(tb, c)
}

func greet(tb testing.TB, c net.Conn) *imapConn {
	x := &imapConn{c: c, br: bufio.NewReaderSize(c, 64<<10)}
	if l, err := x.br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		tb.Fatalf("greeting %q %v", l, err)
	}
	return x
}

// cmd sends one tagged command and reads to its completion, discarding
// literals; it returns the literal bytes read.
func (x *imapConn) cmd(tb testing.TB, tag, line string) int64 {
	if _, err := io.WriteString(x.c, tag+" "+line+"\r\n"); err != nil {
		tb.Fatal(err)
	}
	var n int64
	for {
		l, err := x.br.ReadString('\n')
		if err != nil {
			tb.Fatalf("%s: %v", line, err)
		}
		if strings.HasSuffix(l, "}\r\n") {
			if i := strings.LastIndexByte(l, '{'); i >= 0 {
				size, _ := strconv.ParseInt(l[i+1:len(l)-3], 10, 64)
				m, err := io.CopyN(io.Discard, x.br, size)
				n += m
				if err != nil {
					tb.Fatal(err)
				}
				continue
			}
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				tb.Fatalf("%s: %s", strings.Fields(line)[0], l)
			}
			return n
		}
	}
}

func (x *imapConn) login(tb testing.TB, h *harness, direct bool, pw string) {
	if !direct {
		x.cmd(tb, "a", "LOGIN "+inboundUser+" "+pw)
		return
	}
	tok, err := h.relay.Tokens.Token(context.Background(), "helpdesk")
	if err != nil {
		tb.Fatal(err)
	}
	x.cmd(tb, "a", "AUTHENTICATE XOAUTH2 "+base64.StdEncoding.EncodeToString([]byte("user="+mailbox+"\x01auth=Bearer "+tok.AccessToken+"\x01\x01")))
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkInboundLogin: connect, log in, log out — through the proxy
// (local bcrypt check at the users file's cost, cached token, TLS dial and
// XOAUTH2 to the fake) against the same client directly on the fake (TLS +
// XOAUTH2). bcrypt alone is reported separately.
//
//	go test ./integration -run '^$' -bench InboundLogin -benchtime 200x
func BenchmarkInboundLogin(b *testing.B) {
	for _, cost := range []int{bcrypt.DefaultCost, bcrypt.MinCost} {
		h, pw := newInboundHarnessCost(b, cost)
		for _, direct := range []bool{false, true} {
			name := fmt.Sprintf("proxy-bcrypt-cost-%d", cost)
			if direct {
				if cost != bcrypt.DefaultCost {
					continue
				}
				name = "direct"
			}
			b.Run(name, func(b *testing.B) {
				var lat []time.Duration
				for b.Loop() {
					start := time.Now()
					var x *imapConn
					if direct {
						x = dialIMAPDirect(b, h)
					} else {
						x = dialIMAPProxy(b, h.relay.IMAPAddr())
					}
					x.login(b, h, direct, pw)
					lat = append(lat, time.Since(start))
					x.cmd(b, "z", "LOGOUT")
					x.c.Close()
				}
				b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.95).Microseconds())/1000, "p95-ms")
			})
		}
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.DefaultCost)
	b.Run("bcrypt-cost-10-alone", func(b *testing.B) {
		for b.Loop() {
			bcrypt.CompareHashAndPassword(hash, []byte("password"))
		}
	})
}

// BenchmarkInboundFetch1000x50KiB: FETCH 1:* BODY.PEEK[] of 1,000 × 50 KiB
// messages in one command, through the proxy and directly.
//
//	go test ./integration -run '^$' -bench InboundFetch -benchtime 5x
func BenchmarkInboundFetch1000x50KiB(b *testing.B) {
	h, pw := newInboundHarnessCost(b, bcrypt.MinCost)
	line := strings.Repeat("0123456789abcdef", 4)[:62] + "\r\n"
	for i := range 1000 {
		head := message(i, mailbox, mailbox, "")
		body := head + strings.Repeat(line, (50<<10-len(head))/64)
		h.fake.Deliver(mailbox, []byte(body))
	}
	for _, direct := range []bool{false, true} {
		name := "proxy"
		if direct {
			name = "direct"
		}
		b.Run(name, func(b *testing.B) {
			var x *imapConn
			if direct {
				x = dialIMAPDirect(b, h)
			} else {
				x = dialIMAPProxy(b, h.relay.IMAPAddr())
			}
			defer x.c.Close()
			x.login(b, h, direct, pw)
			x.cmd(b, "s", "EXAMINE INBOX")
			var n int64
			for b.Loop() {
				n = x.cmd(b, "f", "FETCH 1:* (BODY.PEEK[])")
			}
			b.SetBytes(n)
		})
	}
}

// BenchmarkInboundIdleMemory: `serve`'s RSS growth for 100 IMAP sessions
// in IDLE through the proxy (each logged in, INBOX selected), and the part
// of it the Go runtime accounts as goroutine stacks and heap in use.
//
//	go test ./integration -run '^$' -bench InboundIdleMemory -benchtime 1x
func BenchmarkInboundIdleMemory(b *testing.B) {
	fake, c, file := processConfig(b)
	dir := filepath.Dir(file)
	users := filepath.Join(dir, "inbound-users")
	hash, _ := bcrypt.GenerateFromPassword([]byte("bench-password"), bcrypt.MinCost)
	os.WriteFile(users, []byte(inboundUser+":"+string(hash)+":helpdesk\n"), 0o600)
	c.Accounts[0].Protocols = []string{"smtp", "imap", "pop3"}
	c.Inbound.UsersFile = users
	c.Inbound.IMAP.Addr, c.Inbound.IMAP.Upstream = freeAddr(b), fake.IMAP.Addr
	c.Inbound.MaxConnectionsPerAccount = 1000
	// processConfig connected with smtp only: connect again with imap.
	m, err := daemon.OpenTokens(c, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.ConnectDevice(context.Background(), "helpdesk", func(dc tokens.DeviceCode) {
		fake.Entra.ApproveDevice(dc.UserCode, mailbox)
	}); err != nil {
		b.Fatal(err)
	}
	adminToken := "bench-admin-token-0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "admin-token"), []byte(adminToken), 0o600)
	c.Admin.TokenFile = filepath.Join(dir, "admin-token")
	writeConfig(b, c, file)
	p := startServe(b, file, c.Listen.Addr)
	// goMem reads the Go runtime's own accounting from serve's /metrics:
	// heap in use and goroutine stacks, which RSS mixes with garbage not
	// yet collected and memory not yet given back.
	goMem := func() (heap, stack float64) {
		req, _ := http.NewRequest("GET", "http://"+c.Admin.Addr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, "go_memstats_heap_inuse_bytes "); ok {
				heap, _ = strconv.ParseFloat(v, 64)
			}
			if v, ok := strings.CutPrefix(l, "go_memstats_stack_inuse_bytes "); ok {
				stack, _ = strconv.ParseFloat(v, 64)
			}
		}
		return heap, stack
	}
	idle := func() *imapConn {
		x := dialIMAPProxy(b, c.Inbound.IMAP.Addr)
		x.cmd(b, "a", "LOGIN "+inboundUser+" bench-password")
		x.cmd(b, "s", "SELECT INBOX")
		io.WriteString(x.c, "i IDLE\r\n")
		if l, err := x.br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+") {
			b.Fatalf("IDLE: %q %v", l, err)
		}
		return x
	}
	warm := idle() // the first session's one-off costs (token, TLS config)
	defer warm.c.Close()
	time.Sleep(time.Second)
	before, _ := rss(b, p.cmd.Process.Pid)
	heap0, stack0 := goMem()
	const n = 100
	for b.Loop() {
		var xs []*imapConn
		for range n {
			xs = append(xs, idle())
		}
		time.Sleep(time.Second)
		after, _ := rss(b, p.cmd.Process.Pid)
		heap, stack := goMem()
		b.ReportMetric((stack-stack0)/1024, "stacks-growth-KB/100-idle")
		b.ReportMetric((heap-heap0)/1024, "heap-inuse-growth-KB/100-idle")
		b.ReportMetric(float64(after-before)/1024, "RSS-growth-MB/100-idle")
		b.ReportMetric(float64(before)/1024, "RSS-before-MB")
		for _, x := range xs {
			x.c.Close()
		}
	}
}
