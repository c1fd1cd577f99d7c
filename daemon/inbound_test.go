package daemon

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/oauthrelay/oauthrelay/configs"
)

// With inbound.imap.addr and inbound.pop3.addr set, serve starts both
// proxies beside the SMTP listener and stops them with it; a login reaches
// the account's token (here: never connected, so a temporary refusal) and
// is counted.
func TestRelay_InboundListenersWired(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("app:"+string(hash)+":helpdesk\n"), 0o600)
	key := make([]byte, 32)
	rand.Read(key)
	c := configs.Default()
	c.Listen.Addr, c.Admin.Addr = "127.0.0.1:0", "127.0.0.1:0"
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Keysafe.Path, c.Keysafe.Key = filepath.Join(dir, "keysafe.bin"), base64.StdEncoding.EncodeToString(key)
	c.Admin.Token = "0123456789abcdef0123"
	c.Accounts = []configs.Account{{Name: "helpdesk", Tenant: "t", ClientID: "c", Mailbox: "helpdesk@contoso.com", Senders: []string{"*"}, Protocols: []string{"smtp", "imap", "pop3"}}}
	configs.AccountDefaults(&c.Accounts[0])
	c.Inbound.UsersFile = users
	c.Inbound.IMAP.Addr, c.Inbound.POP3.Addr = "127.0.0.1:0", "127.0.0.1:0"
	if ps := configs.Validate(&c); len(ps) != 0 {
		t.Fatal(ps)
	}
	r, err := New(&c, slog.New(slog.DiscardHandler), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	talk := func(addr string, lines ...string) []string {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		var got []string
		read := func() {
			l, _ := br.ReadString('\n')
			got = append(got, strings.TrimSpace(l))
		}
		read()
		for _, l := range lines {
			conn.Write([]byte(l + "\r\n"))
			read()
		}
		return got
	}
	imap := talk(r.IMAPAddr(), "a LOGIN app wrong", "b LOGIN app pw")
	if !strings.HasPrefix(imap[0], "* OK [CAPABILITY") || !strings.HasPrefix(imap[1], "a NO [AUTHENTICATIONFAILED]") ||
		!strings.HasPrefix(imap[2], "b NO [UNAVAILABLE] account helpdesk needs attention") {
		t.Errorf("IMAP: %q", imap)
	}
	pop := talk(r.POP3Addr(), "USER app", "PASS pw")
	if pop[0] != "+OK oauthrelay POP3 proxy ready" || !strings.HasPrefix(pop[2], "-ERR [SYS/TEMP] account helpdesk needs attention") {
		t.Errorf("POP3: %q", pop)
	}
	if n := testutil.ToFloat64(r.Metrics.inboundLogins.WithLabelValues("imap", "bad_password")); n != 1 {
		t.Errorf("imap bad_password logins = %v", n)
	}
	if n := testutil.ToFloat64(r.Metrics.inboundLogins.WithLabelValues("pop3", "unavailable")); n != 1 {
		t.Errorf("pop3 unavailable logins = %v", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", r.IMAPAddr()); err == nil {
		t.Error("the IMAP listener is still open after Shutdown")
	}
}
