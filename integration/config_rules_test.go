package integration

import (
	"encoding/base64"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/relay/admin"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// validConfig is a configuration Validate accepts.
func validConfig() configs.Config {
	c := configs.Default()
	c.Accounts = []configs.Account{{Name: "a", Tenant: "t", ClientID: "c", Mailbox: "a@contoso.com", Senders: []string{"*"}}}
	configs.AccountDefaults(&c.Accounts[0])
	return c
}

func problemAt(ps configs.Problems, key string) bool {
	for _, p := range ps {
		if p.Key == key {
			return true
		}
	}
	return false
}

type stubAccounts struct{ admin.Accounts }

func (stubAccounts) ConnectHandler() http.Handler { return http.NotFoundHandler() }

// configs cannot import admin or tokens, so it repeats their rules; this
// keeps the copies honest: check-config refuses exactly what serve refuses.
func TestConfigRules_AgreeWithAdminAndKeysafe(t *testing.T) {
	for n := 1; n <= 40; n++ {
		token := strings.Repeat("x", n)
		c := validConfig()
		c.Admin.Token = token
		refusedByConfig := problemAt(configs.Validate(&c), "admin.token")
		_, err := admin.New(admin.Options{Token: token, Accounts: stubAccounts{}})
		if refusedByConfig != (err != nil) {
			t.Errorf("a %d-character admin token: configs refuses %v, admin.New refuses %v (%v)", n, refusedByConfig, err != nil, err)
		}
	}

	b64 := base64.StdEncoding.EncodeToString
	key32 := make([]byte, 32)
	for i := range key32 {
		key32[i] = byte(i*7 + 250) // some bytes that base64 as + and /
	}
	for _, key := range []string{
		b64(key32), b64(key32) + "\n", " " + b64(key32) + " ", b64(key32[:31]), b64(append(key32, 1)),
		b64(key32[:16]), base64.URLEncoding.EncodeToString(key32), base64.RawStdEncoding.EncodeToString(key32),
		"k", "not base64 at all!", strings.Repeat("A", 44),
	} {
		c := validConfig()
		c.Keysafe.Key = key
		refusedByConfig := problemAt(configs.Validate(&c), "keysafe.key")
		_, err := tokens.LoadKey(key, "", filepath.Join(t.TempDir(), "keysafe.bin"), slog.New(slog.DiscardHandler))
		if refusedByConfig != (err != nil) {
			t.Errorf("keysafe.key %q: configs refuses %v, tokens.LoadKey refuses %v (%v)", key, refusedByConfig, err != nil, err)
		}
	}
}
