package daemon

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"math/big"
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
// proxies beside the SMTP listener (offering STARTTLS with listen.tls's
// certificate) and stops them with it; a login reaches
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
	c.Listen.TLS.CertFile, c.Listen.TLS.KeyFile = writeTestCert(t, dir)
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
	if !strings.HasPrefix(imap[0], "* OK [CAPABILITY IMAP4rev1 STARTTLS ") || !strings.HasPrefix(imap[1], "a NO [AUTHENTICATIONFAILED]") ||
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

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1143": true, "[::1]:1143": true, "localhost:1143": true,
		"0.0.0.0:1143": false, ":1143": false, "10.0.0.5:1143": false, "nonsense": false,
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and its key
// into dir.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// inbound.login_cache_ttl: 0 turns the cache off (the inbound package's
// "off" is negative, its 0 the default).
func TestLoginCacheTTL(t *testing.T) {
	if got := loginCacheTTL(0); got >= 0 {
		t.Errorf("0s gives %v, want the cache off (negative)", got)
	}
	if got := loginCacheTTL(90 * time.Second); got != 90*time.Second {
		t.Errorf("90s gives %v", got)
	}
}
