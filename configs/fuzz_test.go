package configs

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: whatever the file and an OAUTHRELAY_* variable hold, Load
// returns a configuration, Problems, or an error — never a panic — and a
// configuration without problems is one Validate accepts and Effective can
// print.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("*.yaml")
	for _, s := range seeds {
		raw, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, "OAUTHRELAY_LISTEN_READ_TIMEOUT", "300")
	}
	for _, s := range []string{
		minimal,
		"listen:\n  read_timeout: 5d\n  max_sessions: sixteen\n",
		"admin:\n  token: 0x1234567890abcdef\n",
		"accounts: [x, {name: [a]}, {senders: {a: b}}]\n",
		"a: &a [*a]\n",
		"listen: &l {addr: x}\nadmin:\n  <<: *l\n",
		"accounts:\n  - &acc {name: a, tenant: t}\n  - <<: *acc\n    name: b\n",
		"listen:\n  addr: x\n  addr: y\n  Addr: z\n",
		"---\nlisten: {}\n---\nadmin: {}\n",
		"delivery:\n  retry: 1m,5m\n  jitter: .nan\n  rate_per_minute: -.inf\n",
		"listen:\n  allowed_networks: [attached, ::1]\n",
		"? [a, b]\n: c\n",
		"!!binary aGVsbG8=\n",
	} {
		f.Add([]byte(s), "OAUTHRELAY_ACCOUNTS_0_SENDERS", "*@contoso.com")
	}
	f.Add([]byte(minimal), "OAUTHRELAY_ACCOUNTS_99999999999999999999_NAME", "x")
	f.Add([]byte(minimal), "OAUTHRELAY_ACCOUNTS_1_NAME", "x")
	f.Add([]byte(minimal), "OAUTHRELAY_DELIVERY_RETRY", ",,")

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yamlBytes []byte, envName, envValue string) {
		file := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(file, yamlBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		env := []string{}
		if envName != "" && !strings.ContainsAny(envName, "=\x00") {
			env = append(env, envName+"="+envValue)
		}
		fakeIfaces := func() ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}, nil
		}
		got, err := Load(LoadOptions{File: file, Env: env, InterfaceAddrs: fakeIfaces})
		var ps Problems
		switch {
		case err == nil:
			if got == nil {
				t.Fatal("no error and no configuration")
			}
			if ps := Validate(&got.Config); len(ps) > 0 {
				t.Fatalf("Load accepted what Validate refuses: %v", ps)
			}
			if _, err := Effective(&got.Config); err != nil {
				t.Fatalf("Effective: %v", err)
			}
		case errors.As(err, &ps):
			if len(ps) == 0 {
				t.Fatal("empty Problems returned as an error")
			}
			for _, p := range ps {
				if p.Key == "" || p.Msg == "" {
					t.Fatalf("a problem without key or message: %q", p)
				}
			}
		}
	})
}
