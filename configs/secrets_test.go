package configs

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check-config must refuse what serve refuses: admin.New wants a token of at
// least 16 characters, tokens.LoadKey the base64 of exactly 32 bytes.
// (integration/config_rules_test.go checks the rules agree with theirs.)
func TestLoad_SecretsServeWouldRefuse(t *testing.T) {
	dir := t.TempDir()
	shortFile := filepath.Join(dir, "admin.token")
	os.WriteFile(shortFile, []byte("short\n"), 0o600)
	badKeyFile := filepath.Join(dir, "keysafe.key")
	os.WriteFile(badKeyFile, []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))+"\n"), 0o600)
	key32 := base64.StdEncoding.EncodeToString(make([]byte, 32))

	tests := []struct {
		name string
		file string
		env  []string
		key  string
		msg  string
	}{
		{"short token in the file", "admin:\n  token: hunter2\n", nil,
			"admin.token", "is 7 characters; serve needs at least 16 — make one with: head -c 24 /dev/urandom | base64"},
		{"short token in the environment", "", []string{"OAUTHRELAY_ADMIN_TOKEN=0123456789abcde"},
			"admin.token", "is 15 characters; serve needs at least 16"},
		{"short token in token_file", "admin:\n  token_file: " + shortFile + "\n", nil,
			"admin.token_file", "is 5 characters; serve needs at least 16"},
		{"key not base64", "keysafe:\n  key: k\n", nil,
			"keysafe.key", "is not base64 — it must be the base64 of 32 random bytes: the key the keysafe was made with, or for a new one: head -c 32 /dev/urandom | base64"},
		{"key of 16 bytes", "", []string{"OAUTHRELAY_KEYSAFE_KEY=" + base64.StdEncoding.EncodeToString(make([]byte, 16))},
			"keysafe.key", "is the base64 of 16 bytes — it must be the base64 of 32 random bytes"},
		{"key_file of 16 bytes", "keysafe:\n  key_file: " + badKeyFile + "\n", nil,
			"keysafe.key_file", "holds the base64 of 16 bytes — it must be the base64 of 32 random bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := loadYAML(t, minimal+tt.file, tt.env...)
			wantProblems(t, ps, map[string]string{tt.key: tt.msg})
			for _, p := range ps {
				if strings.Contains(p.Msg, "hunter2") || strings.Contains(p.Msg, "0123456789abcde") {
					t.Errorf("a problem shows the secret: %v", p)
				}
			}
		})
	}
	// What serve accepts passes: no token (one is generated), 16 characters,
	// a 32-byte key with the newline a file or `base64` adds.
	for _, env := range [][]string{
		{},
		{"OAUTHRELAY_ADMIN_TOKEN=0123456789abcdef", "OAUTHRELAY_KEYSAFE_KEY=" + key32 + "\n"},
	} {
		if _, ps := loadYAML(t, minimal, env...); len(ps) != 0 {
			t.Errorf("%q: %v", env, ps)
		}
	}
}
