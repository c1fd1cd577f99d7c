package relay

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/queue"
	"golang.org/x/crypto/bcrypt"
)

func TestRouter_FirstMatchWinsNeverOpen(t *testing.T) {
	r := NewRouter([]Route{
		{Account: "alerts", Patterns: []string{"alerts@contoso.com"}},
		{Account: "contoso", Patterns: []string{"*@contoso.com", "*@*.contoso.com"}},
		{Account: "fallback", Patterns: []string{"*@fabrikam.com"}},
	})
	tests := []struct {
		sender, account string
		ok              bool
	}{
		{"alerts@contoso.com", "alerts", true},
		{"ALERTS@Contoso.com", "alerts", true},
		{"bob@contoso.com", "contoso", true},
		{"scanner@floor2.contoso.com", "contoso", true},
		{"bob@notcontoso.com", "", false},
		{"bob@contoso.com.evil.test", "", false},
		{"x@fabrikam.com", "fallback", true},
		{"", "", false}, // the null sender only routes through "*"
		{`"weird@user"@contoso.com`, "contoso", true},
		{`"bob@contoso.com"@evil.test`, "", false}, // the domain is evil.test
		{`"alerts"@contoso.com`, "alerts", true},
	}
	for _, tt := range tests {
		var sender Address
		if tt.sender != "" {
			var err error
			if sender, err = ParseAddress(tt.sender, false); err != nil {
				t.Fatal(err)
			}
		}
		got, ok := r.Route(sender)
		if got != tt.account || ok != tt.ok {
			t.Errorf("Route(%q) = %q, %v; want %q, %v", tt.sender, got, ok, tt.account, tt.ok)
		}
	}
	star := NewRouter([]Route{{Account: "any", Patterns: []string{"*"}}})
	if a, ok := star.Route(Address{}); !ok || a != "any" {
		t.Error(`"*" must route the null sender`)
	}
}

func TestRewriteFrom_KeepsOriginalInReplyTo(t *testing.T) {
	in := "Received: from x\r\nFrom: \"App\"\r\n <app@contoso.com>\r\nSubject: hi\r\n\r\nFrom: not a header\r\nbody\r\n"
	b, _ := io.ReadAll(rewriteFrom(bufio.NewReader(strings.NewReader(in)), "mbx@contoso.com"))
	got := string(b)
	want := "Received: from x\r\nSubject: hi\r\nFrom: mbx@contoso.com\r\nReply-To: \"App\" <app@contoso.com>\r\n\r\nFrom: not a header\r\nbody\r\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	// An existing Reply-To wins; a message without From passes unchanged.
	in2 := "From: a@b.c\r\nReply-To: r@b.c\r\n\r\nx\r\n"
	b, _ = io.ReadAll(rewriteFrom(strings.NewReader(in2), "m@b.c"))
	if string(b) != "Reply-To: r@b.c\r\nFrom: m@b.c\r\n\r\nx\r\n" {
		t.Errorf("got %q", b)
	}
	in3 := "Subject: x\r\n\r\nbody\r\n"
	if b, _ = io.ReadAll(rewriteFrom(strings.NewReader(in3), "m@b.c")); string(b) != in3 {
		t.Errorf("got %q", b)
	}
}

func TestBuildDSN_RFC3464Parts(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	m := &queue.Meta{ID: "0123456789abcdef0123", From: "app@contoso.com", Account: "helpdesk", Arrived: now, LastAttempt: now}
	failed := []queue.Recipient{
		{Addr: "a@x.test", Last: &queue.Reply{Code: 554, Enhanced: "5.2.252", Text: "SendAsDenied; mbx not allowed to send as app"}},
		{Addr: "b@x.test", Last: &queue.Reply{Code: 451, Enhanced: "4.4.7", Text: "message expired"}},
	}
	dsn := string(buildDSN("relay.test", "smtp.office365.com", "Microsoft 365", "mbx@contoso.com", m, failed, []byte("Subject: original\r\n"), now))
	for _, want := range []string{
		"From: Mail Delivery System <mbx@contoso.com>\r\n", "To: <app@contoso.com>\r\n",
		"Content-Type: multipart/report; report-type=delivery-status;",
		"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.test\r\n",
		"Final-Recipient: rfc822; a@x.test\r\nAction: failed\r\nStatus: 5.2.252\r\nRemote-MTA: dns; smtp.office365.com\r\n",
		"Diagnostic-Code: smtp; 554 5.2.252 SendAsDenied",
		"Final-Recipient: rfc822; b@x.test\r\nAction: failed\r\nStatus: 4.4.7\r\nDiagnostic-Code", // no Remote-MTA: we made that reply
		"Content-Type: text/rfc822-headers\r\n\r\nSubject: original\r\n",
		"may not send as app@contoso.com",
	} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	if !strings.HasSuffix(dsn, "--\r\n") {
		t.Error("multipart not closed")
	}
}

func TestDelivery_PacingNeverExceedsRatePerMinute(t *testing.T) {
	d := NewUpstream(UpstreamConfig{RatePerMinute: 30, IdleTimeout: time.Minute}, []UpstreamAccount{{Name: "a"}}, nil, nil, UpstreamEvents{})
	defer d.Close()
	lim := d.accounts["a"].limiter
	// Over any minute at most 30 + the burst may pass: Microsoft allows 30.
	if lim.Burst() != 1 || float64(lim.Limit())*60 != 30 {
		t.Fatalf("limiter burst %d, rate %v/min", lim.Burst(), float64(lim.Limit())*60)
	}
	start := time.Unix(0, 0)
	passed := 0
	for i := 0; i < 600; i++ { // 60 s in 100 ms steps, someone always waiting
		if lim.AllowN(start.Add(time.Duration(i)*100*time.Millisecond), 1) {
			passed++
		}
	}
	if passed > 31 {
		t.Errorf("%d messages passed in one minute, want at most 31", passed)
	}
}

// A High Volume Email account is not paced like a mailbox; the mailbox
// beside it still is.
func TestDelivery_HVEAccountIsNotPaced(t *testing.T) {
	d := NewUpstream(UpstreamConfig{RatePerMinute: 30, IdleTimeout: time.Minute},
		[]UpstreamAccount{{Name: "mbx"}, {Name: "bulk", Unpaced: true}}, nil, nil, UpstreamEvents{})
	defer d.Close()
	if lim := d.accounts["bulk"].limiter; lim.Limit() != rate.Inf {
		t.Errorf("HVE account paced at %v/s", lim.Limit())
	}
	if lim := d.accounts["mbx"].limiter; float64(lim.Limit())*60 != 30 {
		t.Errorf("mailbox paced at %v/min, want 30", float64(lim.Limit())*60)
	}
}

// remoteAs makes accepted connections report addr as their source, so the
// listener's rules for non-loopback clients can be tested over loopback.
type remoteAs struct {
	net.Listener
	addr net.Addr
}

func (r remoteAs) Accept() (net.Conn, error) {
	c, err := r.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{Conn: c, addr: r.addr}, nil
}

type remoteConn struct {
	net.Conn
	addr net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.addr }

func TestListener_AuthOnlyOverTLSOrFromLoopback(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	for _, tt := range []struct {
		name      string
		remote    net.Addr
		wantOffer bool
	}{
		{"loopback client", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, true},
		{"remote client without TLS", &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 40000}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")}
			l := NewListener(ListenerConfig{Hostname: "relay.test", AllowedNetworks: nets, MaxMessageBytes: 1 << 20,
				MaxRecipients: 10, Users: map[string][]byte{"app": hash}}, nil, NewRouter(nil), slog.New(slog.DiscardHandler), ListenerEvents{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go l.Serve(remoteAs{Listener: ln, addr: tt.remote})
			defer l.Shutdown(context.Background())
			c, err := smtp.Dial(ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Hello("client.test"); err != nil {
				t.Fatal(err)
			}
			if offered, _ := c.Extension("AUTH"); offered != tt.wantOffer {
				t.Fatalf("AUTH offered = %v, want %v", offered, tt.wantOffer)
			}
			err = c.Auth(sasl.NewPlainClient("", "app", "pw"))
			if tt.wantOffer && err != nil {
				t.Errorf("AUTH from loopback: %v", err)
			}
			if !tt.wantOffer && err == nil {
				t.Error("AUTH in clear text from a remote client was accepted")
			}
		})
	}
}
