package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// writePair writes a self-signed certificate for cn and its key.
func writePair(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func servedCN(t *testing.T, r *certReloader) string {
	t.Helper()
	c, err := r.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

// A renewed listen.tls certificate is served without a restart; a broken
// renewal keeps the previous one in service.
func TestCertReloader_PicksUpRenewal(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, cf, kf, "old.test")
	r, err := newCertReloader(cf, kf, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.interval = 0
	if cn := servedCN(t, r); cn != "old.test" {
		t.Fatalf("serves %s", cn)
	}
	os.WriteFile(kf, []byte("half-written"), 0o600)
	if cn := servedCN(t, r); cn != "old.test" {
		t.Errorf("a broken key file: serves %s, want the previous certificate", cn)
	}
	writePair(t, cf, kf, "new.test")
	if cn := servedCN(t, r); cn != "new.test" {
		t.Errorf("after renewal serves %s", cn)
	}
	// Swapped for a device or a FIFO: refused at once (no endless read,
	// no hang), the renewed certificate stays in use.
	for _, target := range []string{"/dev/zero", "fifo"} {
		if target == "fifo" {
			target = filepath.Join(dir, "fifo")
			if err := syscall.Mkfifo(target, 0o600); err != nil {
				t.Skip(err)
			}
		}
		os.Remove(cf)
		if err := os.Symlink(target, cf); err != nil {
			t.Fatal(err)
		}
		done := make(chan string, 1)
		go func() { done <- servedCN(t, r) }()
		select {
		case cn := <-done:
			if cn != "new.test" {
				t.Errorf("with %s as the certificate: serves %s", target, cn)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("with %s as the certificate, a handshake hangs", target)
		}
	}
}
