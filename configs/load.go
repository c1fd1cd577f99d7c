package configs

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable oauthrelay reads.
const EnvPrefix = "OAUTHRELAY_"

// DefaultSearchPaths are tried, in order, when no --config is given.
var DefaultSearchPaths = []string{"./oauthrelay.yaml", "/etc/oauthrelay/oauthrelay.yaml"}

// LoadOptions says where configuration comes from.
type LoadOptions struct {
	// File is an explicit config file (--config); it must exist.
	File string
	// SearchPaths are tried when File is empty; nil means DefaultSearchPaths.
	SearchPaths []string
	// Env is the environment as KEY=VALUE; nil means os.Environ().
	Env []string
	// Flags are applied last. A flag is bound to a config key by the
	// annotation FlagKey (see BindFlag); only changed flags count.
	Flags *pflag.FlagSet
}

// FlagKey is the pflag annotation that names the config key a flag sets.
const FlagKey = "oauthrelay_config_key"

// BindFlag marks flag name of fs as setting config key key.
func BindFlag(fs *pflag.FlagSet, name, key string) {
	_ = fs.SetAnnotation(name, FlagKey, []string{key})
}

// Loaded is a configuration with where it came from.
type Loaded struct {
	Config
	// File is the YAML file read, or "" if none was found.
	File string
	// Warnings are things worth saying that do not stop the relay, such as
	// a ${VAR} that is not set (it becomes empty, as in docker compose).
	Warnings []string
}

// Load reads, resolves and validates the configuration. A validation failure
// is returned as Problems (every problem at once) together with the config
// as far as it could be read.
func Load(opts LoadOptions) (*Loaded, error) {
	env := envMap(opts.Env)
	v := viper.New()
	setDefaults(v, "", reflect.ValueOf(Default()))

	var problems Problems
	out := &Loaded{}
	file, err := findFile(opts)
	if err != nil {
		return nil, err
	}
	out.File = file
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("config: %s is not valid YAML: %w", file, err)
		}
		var missing []string
		expandValues(doc, env, &missing)
		for _, m := range missing {
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: ${%s} is not set in the environment, so it is empty — export %s if that value is needed", file, m, m))
		}
		if err := v.MergeConfigMap(doc); err != nil {
			return nil, fmt.Errorf("config: %s: %w", file, err)
		}
		problems = append(problems, unknownKeys(v.AllSettings())...)
	}

	applyEnv(v, env)
	if err := applyAccountEnv(v, env); err != nil {
		problems = append(problems, Problem{Key: "OAUTHRELAY_ACCOUNTS_*", Msg: err.Error()})
	}
	if opts.Flags != nil {
		opts.Flags.Visit(func(f *pflag.Flag) {
			if keys := f.Annotations[FlagKey]; len(keys) == 1 {
				v.Set(keys[0], f.Value.String())
			}
		})
	}

	if err := v.Unmarshal(&out.Config, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	))); err != nil {
		problems = append(problems, Problem{Key: "config", Msg: err.Error()})
		return out, problems
	}
	for i := range out.Accounts {
		AccountDefaults(&out.Accounts[i])
	}
	problems = append(problems, resolveSecrets(&out.Config)...)
	problems = append(problems, Validate(&out.Config)...)
	if len(problems) > 0 {
		return out, problems
	}
	return out, nil
}

func findFile(opts LoadOptions) (string, error) {
	if opts.File != "" {
		if _, err := os.Stat(opts.File); err != nil {
			return "", fmt.Errorf("config: --config %s: %w", opts.File, err)
		}
		return opts.File, nil
	}
	paths := opts.SearchPaths
	if paths == nil {
		paths = DefaultSearchPaths
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", nil
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

// expandValues replaces ${VAR} in every string value of a parsed YAML
// document (never in comments, and only the braced form, so a literal "$" in
// a password survives) and records variables that are not set.
func expandValues(node any, env map[string]string, missing *[]string) any {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			n[k] = expandValues(v, env, missing)
		}
	case []any:
		for i, v := range n {
			n[i] = expandValues(v, env, missing)
		}
	case string:
		return envRef.ReplaceAllStringFunc(n, func(m string) string {
			name := m[2 : len(m)-1]
			val, ok := env[name]
			if !ok {
				*missing = append(*missing, name)
			}
			return val
		})
	}
	return node
}

// leafKeys lists the dotted keys of a struct type, e.g. "listen.addr".
func leafKeys(t reflect.Type, prefix string, keys map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" {
			continue
		}
		key := prefix + tag
		if f.Type.Kind() == reflect.Struct {
			leafKeys(f.Type, key+".", keys)
			continue
		}
		keys[key] = f.Type
	}
}

func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	t := val.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "accounts" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			setDefaults(v, prefix+tag+".", val.Field(i))
			continue
		}
		v.SetDefault(prefix+tag, val.Field(i).Interface())
	}
}

func configKeys() map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	leafKeys(reflect.TypeOf(Config{}), "", keys)
	return keys
}

func accountKeys() map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	leafKeys(reflect.TypeOf(Account{}), "", keys)
	return keys
}

// applyEnv sets every known non-account key from OAUTHRELAY_<KEY>, with dots
// as underscores: listen.addr <- OAUTHRELAY_LISTEN_ADDR. Lists are comma
// separated.
func applyEnv(v *viper.Viper, env map[string]string) {
	for key, typ := range configKeys() {
		if key == "accounts" {
			continue
		}
		name := EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if val, ok := env[name]; ok {
			v.Set(key, envValue(val, typ))
		}
	}
}

// envValue splits comma-separated lists; everything else is decoded later.
func envValue(val string, typ reflect.Type) any {
	if typ.Kind() != reflect.Slice {
		return val
	}
	parts := strings.Split(val, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

var accountEnv = regexp.MustCompile(`^OAUTHRELAY_ACCOUNTS_([0-9]+)_([A-Z_]+)$`)

// applyAccountEnv merges OAUTHRELAY_ACCOUNTS_<n>_<KEY> into the account list,
// so a Docker sidecar can be configured from the environment alone.
func applyAccountEnv(v *viper.Viper, env map[string]string) error {
	known := accountKeys()
	byIndex := map[int]map[string]any{}
	var errs []string
	for name, val := range env {
		m := accountEnv.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		i, _ := strconv.Atoi(m[1])
		key := strings.ToLower(m[2])
		if _, ok := known[key]; !ok {
			errs = append(errs, fmt.Sprintf("%s: unknown account key %q", name, key))
			continue
		}
		if byIndex[i] == nil {
			byIndex[i] = map[string]any{}
		}
		byIndex[i][key] = envValue(val, known[key])
	}
	if len(byIndex) == 0 {
		return errorsOrNil(errs)
	}
	var list []any
	if cur, ok := v.Get("accounts").([]any); ok {
		list = cur
	}
	for i, kv := range byIndex {
		if i > len(list)+len(byIndex) {
			errs = append(errs, fmt.Sprintf("OAUTHRELAY_ACCOUNTS_%d_*: account numbers must count up from 0", i))
			continue
		}
		for len(list) <= i {
			list = append(list, map[string]any{})
		}
		acc, _ := list[i].(map[string]any)
		if acc == nil {
			acc = map[string]any{}
		}
		for k, val := range kv {
			acc[k] = val
		}
		list[i] = acc
	}
	v.Set("accounts", list)
	return errorsOrNil(errs)
}

func errorsOrNil(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return errors.New(strings.Join(errs, "; "))
}

// unknownKeys reports keys in the file that no field reads, with a
// suggestion, because a typo would otherwise silently keep a default.
func unknownKeys(settings map[string]any) Problems {
	known, knownAccount := configKeys(), accountKeys()
	var problems Problems
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			key := prefix + k
			if key == "accounts" {
				list, _ := val.([]any)
				for i, item := range list {
					acc, ok := item.(map[string]any)
					if !ok {
						problems = append(problems, Problem{Key: fmt.Sprintf("accounts[%d]", i), Msg: "must be a mapping of keys (name, tenant, client_id, …)"})
						continue
					}
					for ak := range acc {
						if _, ok := knownAccount[ak]; !ok {
							problems = append(problems, Problem{Key: fmt.Sprintf("accounts[%d].%s", i, ak), Msg: "unknown key" + suggest(ak, knownAccount)})
						}
					}
				}
				continue
			}
			if sub, ok := val.(map[string]any); ok {
				if _, leaf := known[key]; !leaf {
					walk(key+".", sub)
					continue
				}
			}
			if _, ok := known[key]; !ok {
				problems = append(problems, Problem{Key: key, Msg: "unknown key" + suggest(key, known)})
			}
		}
	}
	walk("", settings)
	sort.Slice(problems, func(i, j int) bool { return problems[i].Key < problems[j].Key })
	return problems
}

func suggest(key string, known map[string]reflect.Type) string {
	best, bestDist := "", 4
	for k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return " — remove it (see configs/oauthrelay.yaml for every key)"
	}
	return fmt.Sprintf(" — did you mean %s?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// resolveSecrets reads the *_file variants. A key and its _file variant
// together is a mistake: which one wins would be a guess.
func resolveSecrets(c *Config) Problems {
	var p Problems
	read := func(key string, val *string, file string) {
		if file == "" {
			return
		}
		if *val != "" {
			p = append(p, Problem{Key: key, Msg: fmt.Sprintf("set together with %s_file — keep only one", key)})
			return
		}
		b, err := os.ReadFile(file)
		if err != nil {
			p = append(p, Problem{Key: key + "_file", Msg: fmt.Sprintf("cannot read %s: %v — check the path and that the relay's user may read it", file, errors.Unwrap(err))})
			return
		}
		*val = strings.TrimSpace(string(b))
	}
	read("admin.token", &c.Admin.Token, c.Admin.TokenFile)
	// keysafe.key_file is not read here: the keysafe creates it on first start.
	for i := range c.Accounts {
		a := &c.Accounts[i]
		read(fmt.Sprintf("accounts[%d].client_secret", i), &a.ClientSecret, a.ClientSecretFile)
	}
	return p
}

// durationString renders a duration the way a person writes it in YAML:
// 5m rather than 5m0s, 120h rather than 120h0m0s.
func durationString(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
