package fakem365

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

// With a state folder, a restarted fake keeps its CA and honours the
// tokens it issued before the restart.
func TestStartWith_StateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	m, err := StartWith(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.PostForm(m.Entra.URL+"/contoso.test/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {"app-1"}, "client_secret": {"s"}, "scope": {"https://outlook.office.com/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.AccessToken == "" {
		t.Fatalf("no token (HTTP %d)", resp.StatusCode)
	}
	ca := m.CA.PEM
	m.Close()

	m2, err := StartWith(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if !bytes.Equal(ca, m2.CA.PEM) {
		t.Error("the CA changed across a restart")
	}
	if _, ok := m2.Entra.CheckAccess(tok.AccessToken); !ok {
		t.Error("an access token issued before the restart is not honoured")
	}
}
