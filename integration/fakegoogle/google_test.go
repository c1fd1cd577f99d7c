package fakegoogle

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStart_AddressesAndCA(t *testing.T) {
	g := startGoogle(t)
	if !strings.HasPrefix(g.AuthorizeURL, g.OAuthURL) || !strings.HasSuffix(g.AuthorizeURL, "/o/oauth2/v2/auth") ||
		g.TokenURL != g.OAuthURL+"/token" || !strings.HasPrefix(g.SMTPAddr, "127.0.0.1:") {
		t.Fatalf("%+v", g)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := g.WriteCA(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(b, g.CA.PEM) || !bytes.HasPrefix(b, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Fatalf("CA file %q %v", b, err)
	}
}
