package configs

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// EnvPrefix starts every environment variable oauthrelay reads.
const EnvPrefix = "OAUTHRELAY_"

// EnvName is the environment variable for a config key: listen.addr →
// OAUTHRELAY_LISTEN_ADDR.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func envMap(env []string) map[string]string {
	if env == nil {
		env = os.Environ()
	}
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok {
			m[k] = val
		}
	}
	return m
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

var numberInName = regexp.MustCompile(`_([0-9]+)_`)

var accountEnv = regexp.MustCompile(`^OAUTHRELAY_ACCOUNTS_([0-9]+)_([A-Z0-9_]+)$`)

// readEnv applies every OAUTHRELAY_* variable to c: OAUTHRELAY_<KEY> for each
// key (lists comma separated) and OAUTHRELAY_ACCOUNTS_<n>_<KEY> for the
// accounts, which sets a key of the file's account n or adds account n.
// Any other variable with the prefix is a problem, like an unknown key in
// the file: a misspelt variable would otherwise silently keep a default.
func (d *decoder) readEnv(c *Config, env map[string]string) {
	keys := configKeys()
	known := map[string]string{} // variable → key
	var names []string
	for key := range keys {
		if key != "accounts" {
			known[EnvName(key)] = key
			names = append(names, EnvName(key))
		}
	}
	sort.Strings(names) // suggestions do not depend on map order
	accKeys := accountKeys()

	vars := make([]string, 0, len(env))
	for name := range env {
		if strings.HasPrefix(strings.ToUpper(name), EnvPrefix) {
			vars = append(vars, name)
		}
	}
	sort.Strings(vars)
	byAccount := map[int][]string{}
	for _, name := range vars {
		if name != strings.ToUpper(name) {
			d.fail(name, "", "environment variable names are upper-case"+suggest(strings.ToUpper(name), candidates(strings.ToUpper(name), names, accKeys), ""))
			continue
		}
		if key, ok := known[name]; ok {
			v, _ := field(reflect.ValueOf(c).Elem(), key)
			d.setText(v, env[name], name, key)
			continue
		}
		if m := accountEnv.FindStringSubmatch(name); m != nil {
			if _, ok := accKeys[strings.ToLower(m[2])]; ok {
				i, err := strconv.Atoi(m[1])
				switch {
				case err != nil:
					d.fail(name, "", "account number too large — accounts are numbered 0, 1, 2, …")
				case m[1] != strconv.Itoa(i):
					d.fail(name, "", fmt.Sprintf("write the account number without leading zeros: OAUTHRELAY_ACCOUNTS_%d_%s", i, m[2]))
				default:
					byAccount[i] = append(byAccount[i], name)
				}
				continue
			}
		}
		if name == EnvPrefix+"ACCOUNTS" {
			d.fail(name, "", "accounts are set one key at a time: OAUTHRELAY_ACCOUNTS_0_NAME, OAUTHRELAY_ACCOUNTS_0_MAILBOX, …")
			continue
		}
		d.fail(name, "", "unknown variable"+suggest(name, candidates(name, names, accKeys),
			" — each OAUTHRELAY_* variable names a config key (listen.addr → OAUTHRELAY_LISTEN_ADDR, accounts[0].mailbox → OAUTHRELAY_ACCOUNTS_0_MAILBOX); rename or unset it"))
	}

	indexes := make([]int, 0, len(byAccount))
	for i := range byAccount {
		indexes = append(indexes, i)
	}
	sort.Ints(indexes)
	for _, i := range indexes {
		if i > len(c.Accounts) {
			for _, name := range byAccount[i] {
				d.fail(name, "", fmt.Sprintf("accounts are numbered from 0 with no gap: there are %d so far, so the next is OAUTHRELAY_ACCOUNTS_%d_*", len(c.Accounts), len(c.Accounts)))
			}
			continue
		}
		if i == len(c.Accounts) {
			c.Accounts = append(c.Accounts, Account{})
		}
		acc := reflect.ValueOf(&c.Accounts[i]).Elem()
		for _, name := range byAccount[i] {
			sub := strings.ToLower(accountEnv.FindStringSubmatch(name)[2])
			v, _ := field(acc, sub)
			d.setText(v, env[name], name, fmt.Sprintf("accounts[%d].%s", i, sub))
		}
	}
}

// candidates are the names a misspelt variable may have meant: every key's
// variable, and, if it holds a number, every account variable with it.
func candidates(name string, names []string, accKeys map[string]reflect.Type) []string {
	out := names
	if n := numberInName.FindStringSubmatch(name); n != nil {
		out = append([]string(nil), names...)
		for k := range accKeys {
			out = append(out, fmt.Sprintf("OAUTHRELAY_ACCOUNTS_%s_%s", n[1], strings.ToUpper(k)))
		}
		sort.Strings(out)
	}
	return out
}
