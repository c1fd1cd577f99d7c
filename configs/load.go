package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/credfile"

	"github.com/spf13/pflag"
)

// DefaultSearchPaths are tried, in order, when no --config is given.
func DefaultSearchPaths() []string {
	return []string{"./oauthrelay.yaml", "/etc/oauthrelay/oauthrelay.yaml"}
}

// LoadOptions says where configuration comes from.
type LoadOptions struct {
	// File is an explicit config file (--config); it must exist.
	File string
	// SearchPaths are tried when File is empty; nil means DefaultSearchPaths().
	SearchPaths []string
	// Env is the environment as KEY=VALUE; nil means os.Environ().
	Env []string
	// Flags are applied last. A flag is bound to a config key by the
	// annotation FlagKey (see BindFlag); only changed flags count.
	Flags *pflag.FlagSet
	// InterfaceAddrs lists the machine's interface addresses for the
	// "attached" network keyword; nil means the real ones.
	InterfaceAddrs func() ([]netip.Prefix, error)
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
	// Searched are the paths looked at for a file (absolute), in order.
	Searched []string
	// Attached is what the "attached" keyword of listen.allowed_networks
	// stood for (Config has it replaced), or nil if it is not used.
	Attached []string
	// Warnings are things worth saying that do not stop the relay, such as
	// a ${VAR} that is not set (it becomes empty, as in docker compose).
	Warnings []Warning
}

// Warning is something worth saying about a key that does not stop the
// relay.
type Warning struct {
	Key string
	Msg string
}

func (w Warning) String() string { return w.Key + ": " + w.Msg }

// Source says where the configuration came from, for check-config and the
// start of serve: the file, or that none was found where.
func (l *Loaded) Source() string {
	if l.File != "" {
		return l.File + " (+ OAUTHRELAY_* environment variables and flags)"
	}
	where := "nowhere"
	if len(l.Searched) > 0 {
		where = strings.Join(l.Searched, ", ")
	}
	return "no config file found (looked for " + where + "); running on built-in defaults + OAUTHRELAY_* environment variables (and flags)"
}

// Load reads, resolves and validates the configuration. Every problem —
// a value that cannot be read as its key's type, an unknown key or
// variable, a secret that cannot be read, a value validation refuses — is
// returned at once as Problems, together with the configuration as far as
// it could be read (a value that could not be read keeps its default).
// Other errors (an explicit --config that does not exist) come alone.
func Load(opts LoadOptions) (*Loaded, error) {
	env := envMap(opts.Env)
	out := &Loaded{Config: Default()}
	file, searched, err := findFile(opts)
	if err != nil {
		return nil, err
	}
	out.File, out.Searched = file, searched

	d := newDecoder(env)
	fileOK := true
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		fileOK = d.readFile(file, raw, &out.Config)
	}
	d.readEnv(&out.Config, env)
	if opts.Flags != nil {
		opts.Flags.Visit(func(f *pflag.Flag) {
			keys := f.Annotations[FlagKey]
			if len(keys) != 1 {
				return
			}
			if v, ok := field(reflect.ValueOf(&out.Config).Elem(), keys[0]); ok {
				d.setText(v, f.Value.String(), "--"+f.Name, keys[0])
			}
		})
	}
	out.Warnings = d.warnings
	problems := d.problems
	if !fileOK {
		return out, problems // the defaults' problems would only be noise
	}

	for i := range out.Accounts {
		AccountDefaults(&out.Accounts[i])
	}
	problems = append(problems, resolveSecrets(&out.Config)...)
	for _, p := range Validate(&out.Config) {
		if !d.readBadly(p.Key) {
			problems = append(problems, p)
		}
	}
	out.Warnings = append(out.Warnings, shadowedSenders(&out.Config)...)
	ifaces := opts.InterfaceAddrs
	if ifaces == nil {
		ifaces = interfaceAddrs
	}
	nets, attached, err := resolveAttached(out.Listen.AllowedNetworks, ifaces)
	if err != nil {
		problems = append(problems, Problem{Key: "listen.allowed_networks", Msg: err.Error()})
	}
	out.Listen.AllowedNetworks, out.Attached = nets, attached
	if len(problems) > 0 {
		return out, problems
	}
	return out, nil
}

// findFile returns the file to read and the paths looked at.
func findFile(opts LoadOptions) (string, []string, error) {
	if opts.File != "" {
		if _, err := os.Stat(opts.File); err != nil {
			return "", nil, fmt.Errorf("config: --config %s: %w", opts.File, err)
		}
		return opts.File, []string{opts.File}, nil
	}
	paths := opts.SearchPaths
	if paths == nil {
		paths = DefaultSearchPaths()
	}
	var searched []string
	for _, p := range paths {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		searched = append(searched, p)
		if _, err := os.Stat(p); err == nil {
			return p, searched, nil
		}
	}
	return "", searched, nil
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
		b, err := credfile.Read(file)
		if err != nil {
			p = append(p, Problem{Key: key + "_file", Msg: fmt.Sprintf("cannot read %s: %v — check the path and that the relay's user may read it", file, errors.Unwrap(err))})
			return
		}
		*val = strings.TrimSpace(string(b))
	}
	read("admin.token", &c.Admin.Token, c.Admin.TokenFile)
	for i := range c.Accounts {
		a := &c.Accounts[i]
		read(fmt.Sprintf("accounts[%d].client_secret", i), &a.ClientSecret, a.ClientSecretFile)
	}
	if c.Keysafe.Key == "" && c.Keysafe.Path != "" {
		p = append(p, checkKeyFile(c.Keysafe.KeyFile, c.Keysafe.Path)...)
	}
	return p
}

// checkKeyFile refuses, as the keysafe would at start (tokens.LoadKey), a
// key file (default <keysafe>.key) that does not hold a key, or a keysafe
// whose key file is gone. A file this user may not read is left to serve:
// check-config often runs as another user.
func checkKeyFile(keyFile, keysafePath string) Problems {
	if keyFile == "" {
		keyFile = keysafePath + ".key"
	}
	raw, err := credfile.Read(keyFile)
	switch {
	case err == nil:
		if what := keysafeKeyProblem(string(raw)); what != "" {
			what = strings.Replace(what, "is ", "holds ", 1) // "holds the base64 of 16 bytes"
			return Problems{{Key: "keysafe.key_file", Msg: fmt.Sprintf("%s %s — it must be the base64 of 32 random bytes: restore the right file from a backup (a keysafe opens only with its own key), or delete it if there is no keysafe yet and one is made at start", keyFile, what)}}
		}
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(keysafePath); err == nil {
			return Problems{{Key: "keysafe.key_file", Msg: fmt.Sprintf("%s does not exist but the keysafe %s does — restore the key file from a backup, or set keysafe.key", keyFile, keysafePath)}}
		}
	}
	return nil
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
