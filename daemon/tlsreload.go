package daemon

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/credfile"
)

// certReloader serves listen.tls's certificate and picks up a renewed one
// (certbot, an ACME client, a copied file) without a restart: at most
// every interval it looks at the files' modification times and, when they
// changed, loads the pair again. A pair that does not load keeps the old
// certificate in use and is logged.
type certReloader struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' modification times and sizes when loaded
	checked time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, interval: 10 * time.Second, log: log}
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("listen.tls: %w", err)
	}
	r.cert, r.stamp, r.checked = &cert, r.fileStamp(), time.Now()
	return r, nil
}

func (r *certReloader) fileStamp() string { return credfile.Stamp(r.certFile, r.keyFile) }

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < r.interval {
		return r.cert, nil
	}
	r.checked = time.Now()
	stamp := r.fileStamp()
	if stamp == r.stamp {
		return r.cert, nil
	}
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		// Half-written files (the key renewed before the certificate)
		// are retried at the next check; the old pair serves meanwhile.
		r.log.Error("listen.tls: the changed certificate cannot be loaded; still serving the previous one", "cert_file", r.certFile, "key_file", r.keyFile, "error", err.Error())
		return r.cert, nil
	}
	r.cert, r.stamp = &cert, stamp
	r.log.Info("listen.tls: certificate reloaded", "cert_file", r.certFile)
	return r.cert, nil
}

// loadPair is tls.LoadX509KeyPair reading the files as credential files
// (regular, small: a FIFO does not hang the start).
func loadPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := credfile.Read(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := credfile.Read(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(cert, key)
}
