package configs

import (
	"fmt"
	"reflect"
	"strings"
)

// decoder sets a Config's fields from the file, the environment and flags,
// in that order. A value it cannot read is a Problem (key, value, what is
// expected) and leaves the field as it was — its default, or what an earlier
// source set — so validation still runs on everything else; validation
// problems about a key that could not be read are left out, since the
// decoding problem already names it.
type decoder struct {
	env      map[string]string // where ${VAR} comes from
	examples map[string]string // key → default as written, for "e.g."
	problems Problems
	bad      []string // config keys with a decoding problem
	warnings []Warning
}

func newDecoder(env map[string]string) *decoder {
	return &decoder{env: env, examples: defaultExamples()}
}

// fail records a problem shown as shown (a key, a variable or a flag) about
// config key key ("" if none).
func (d *decoder) fail(shown, key, msg string) {
	d.problems = append(d.problems, Problem{Key: shown, Msg: msg})
	if key != "" {
		d.bad = append(d.bad, key)
	}
}

// readBadly reports whether key, or the list or section it is in, had a
// decoding problem.
func (d *decoder) readBadly(key string) bool {
	for _, b := range d.bad {
		if key == b || strings.HasPrefix(key, b+".") || strings.HasPrefix(key, b+"[") {
			return true
		}
	}
	return false
}

// expand replaces ${VAR} in a value from the environment (only the braced
// form, so a "$" inside a password is left alone) and warns, naming key,
// about a variable that is not set: it becomes empty, as in docker compose.
func (d *decoder) expand(text, key string) string {
	return envRef.ReplaceAllStringFunc(text, func(m string) string {
		name := m[2 : len(m)-1]
		val, ok := d.env[name]
		if !ok {
			w := Warning{Key: key, Msg: fmt.Sprintf("${%s} is not set in the environment, so it is empty — export %s if that value is needed", name, name)}
			for _, seen := range d.warnings {
				if seen == w {
					return ""
				}
			}
			d.warnings = append(d.warnings, w)
		}
		return val
	})
}

// setText sets field v, config key key, from text as found in the
// environment or a flag (shown names it): lists are comma separated, and
// item n of one is named in the message.
func (d *decoder) setText(v reflect.Value, text, shown, key string) {
	t := v.Type()
	if t.Kind() != reflect.Slice {
		val, msg := parseValue(t, text, d.examples[key])
		if msg != "" {
			d.fail(shown, key, msg)
			return
		}
		v.Set(val)
		return
	}
	d.setItems(v, splitList(text), key, func(i int, msg string) (string, string) {
		return shown, fmt.Sprintf("item %d: %s", i+1, msg)
	})
}

// setItems sets list field v from its items' text, or, if any item is
// wrong, reports each wrong one (where says how) and leaves v as it was.
func (d *decoder) setItems(v reflect.Value, items []string, key string, where func(i int, msg string) (shown, fullMsg string)) {
	t := v.Type()
	out := reflect.MakeSlice(t, 0, len(items))
	ok := true
	for i, item := range items {
		val, msg := parseValue(t.Elem(), item, "")
		if msg != "" {
			shown, full := where(i, msg)
			d.fail(shown, key, full)
			ok = false
			continue
		}
		out = reflect.Append(out, val)
	}
	if ok {
		v.Set(out)
	}
}

// field finds the field for a dotted key ("listen.auth.required") in v, a
// struct; ok is false if there is none.
func field(v reflect.Value, key string) (reflect.Value, bool) {
	for _, name := range strings.Split(key, ".") {
		t := v.Type()
		if t.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		found := false
		for i := 0; i < t.NumField(); i++ {
			if t.Field(i).Tag.Get("yaml") == name {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			return reflect.Value{}, false
		}
	}
	return v, true
}

// leafKeys lists the dotted keys of a struct type, e.g. "listen.addr", with
// their types; a list of accounts is one key.
func leafKeys(t reflect.Type, prefix string, keys map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
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

// suggest is " — did you mean X?" for the candidate closest to name, or
// otherwise.
func suggest(name string, candidates []string, otherwise string) string {
	best, bestDist := "", 4
	if len(name) > 64 {
		return otherwise // no key is that long; and the distance costs len²
	}
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist && d < len(name) {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return otherwise
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
