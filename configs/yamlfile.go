package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The file is read as a tree of YAML nodes, not decoded into Go values, so
// that each value is read as its key's type from the text as typed: a string
// key gets the literal text (an unquoted 0x1234567890abcdef stays that, not
// the number 1311768467294899695), and a duration key sees "300", not an
// integer it would take for nanoseconds.

var accountsType = reflect.TypeOf([]Account{})

// readFile decodes the YAML document raw (from file name) into c. It returns
// false if raw is not a configuration at all (not YAML, not a mapping), when
// validating the defaults would only add noise.
func (d *decoder) readFile(name string, raw []byte, c *Config) bool {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return true // empty: defaults
		}
		d.fail(name, "", "is not valid YAML: "+strings.TrimPrefix(err.Error(), "yaml: "))
		return false
	}
	var more yaml.Node
	switch err := dec.Decode(&more); {
	case err == nil:
		d.fail(name, "", fmt.Sprintf("holds more than one YAML document (another starts at line %d) — keep one", more.Line))
		return false
	case !errors.Is(err, io.EOF):
		d.fail(name, "", "is not valid YAML: "+strings.TrimPrefix(err.Error(), "yaml: "))
		return false
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return true
		}
		root = resolve(root.Content[0])
	}
	if isNull(root) {
		return true
	}
	if root.Kind != yaml.MappingNode {
		d.fail(name, "", describe(root)+"; a configuration file is a mapping of sections (listen:, admin:, accounts:, …)")
		return false
	}
	d.mapping(root, reflect.ValueOf(c).Elem(), "", "")
	return true
}

// resolve follows an alias (*name) to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe says what a node is, for "… ; expected …".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "is a list"
	case yaml.MappingNode:
		return "is a mapping"
	case yaml.ScalarNode:
		if isNull(n) {
			return "has no value"
		}
		return "is a single value"
	}
	return "is not a value"
}

// mapping decodes a YAML mapping into struct v. prefix starts every key
// ("listen.", "accounts[0]."); hint starts a suggested key ("listen.", or ""
// in an account, where the bare key reads better).
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, prefix, hint string) {
	t := v.Type()
	byName := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" {
			byName[tag] = i
			names = append(names, hint+tag)
		}
	}
	seen := map[string]int{} // key → line
	for _, p := range d.pairs(n, prefix) {
		typed := p.key.Value
		if p.key.Kind != yaml.ScalarNode || typed == "" {
			where := fmt.Sprintf("line %d", p.key.Line)
			if prefix != "" {
				where = strings.TrimSuffix(prefix, ".") + " " + where
			}
			d.fail(where, "", "a key must be a plain name such as addr — remove this one")
			continue
		}
		i, ok := byName[strings.ToLower(typed)]
		if !ok {
			if !p.merged {
				d.fail(prefix+typed, "", "unknown key"+suggest(hint+strings.ToLower(typed), names, " — remove it (see configs/oauthrelay.yaml for every key)"))
			}
			continue
		}
		f := t.Field(i)
		key := prefix + f.Tag.Get("yaml")
		if line, dup := seen[key]; dup {
			if !p.merged {
				d.fail(key, key, fmt.Sprintf("set twice (lines %d and %d) — keep one", line, p.key.Line))
			}
			continue
		}
		seen[key] = p.key.Line
		d.value(p.value, v.Field(i), key, f.Tag.Get("secret") == "true")
	}
}

type pair struct {
	key, value *yaml.Node
	merged     bool // from a merge key (<<: *anchor): the mapping's own keys win
}

// pairs lists a mapping's keys and values, its own first, then those of
// the mappings it merges (<<: *anchor), each merged mapping once.
func (d *decoder) pairs(n *yaml.Node, prefix string) []pair {
	var own, merged []pair
	visited := map[*yaml.Node]bool{n: true}
	var add func(m *yaml.Node, isMerged bool)
	add = func(m *yaml.Node, isMerged bool) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, val := m.Content[i], m.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				sources := []*yaml.Node{val}
				if r := resolve(val); r.Kind == yaml.SequenceNode {
					sources = r.Content
				}
				for _, src := range sources {
					src = resolve(src)
					if src.Kind != yaml.MappingNode {
						d.fail(prefix+"<<", "", fmt.Sprintf("line %d: merges only mappings (<<: *anchor)", k.Line))
						continue
					}
					if !visited[src] {
						visited[src] = true
						add(src, true)
					}
				}
				continue
			}
			if isMerged {
				merged = append(merged, pair{k, val, true})
			} else {
				own = append(own, pair{k, val, false})
			}
		}
	}
	add(n, false)
	return append(own, merged...)
}

// value decodes node n into field v, config key key.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string, secret bool) {
	n = resolve(n)
	t := v.Type()
	switch {
	case t.Kind() == reflect.Struct:
		if isNull(n) {
			return // an empty section keeps its defaults
		}
		if n.Kind != yaml.MappingNode {
			d.fail(key, key, describe(n)+"; expected "+expected(t, ""))
			return
		}
		d.mapping(n, v, key+".", key+".")
	case t == accountsType:
		d.accounts(n, v)
	case t.Kind() == reflect.Slice:
		d.list(n, v, key)
	default:
		d.scalar(n, v, key, secret)
	}
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string, secret bool) {
	t := v.Type()
	if n.Kind != yaml.ScalarNode {
		d.fail(key, key, describe(n)+"; expected "+expected(t, d.examples[key]))
		return
	}
	if isNull(n) {
		switch {
		case secret && n.Value != "":
			d.fail(key, key, fmt.Sprintf("%s is YAML for no value — quote it (%q) if that is the secret, or leave the value empty", n.Value, n.Value))
		case t.Kind() == reflect.String:
			v.SetString("")
		default:
			eg := d.examples[key]
			if eg == "" {
				eg = strings.TrimPrefix(expected(t, ""), "a ")
			}
			d.fail(key, key, fmt.Sprintf("has no value — e.g. %s, or remove the line to keep the default", eg))
		}
		return
	}
	val, msg := parseValue(t, d.expand(n.Value, key), d.examples[key])
	if msg != "" {
		d.fail(key, key, msg)
		return
	}
	v.Set(val)
}

// list decodes a YAML list, or a single comma-separated value, into a list
// field. Item i's problems are reported as key[i].
func (d *decoder) list(n *yaml.Node, v reflect.Value, key string) {
	at := func(i int, msg string) (string, string) { return fmt.Sprintf("%s[%d]", key, i), msg }
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		d.setItems(v, splitList(d.expand(n.Value, key)), key, at)
	case yaml.SequenceNode:
		items := make([]string, len(n.Content))
		ok := true
		for i, item := range n.Content {
			item = resolve(item)
			switch {
			case item.Kind != yaml.ScalarNode:
				d.fail(fmt.Sprintf("%s[%d]", key, i), key, describe(item)+"; expected "+expected(v.Type().Elem(), ""))
				ok = false
			case !isNull(item):
				items[i] = d.expand(item.Value, key)
			}
		}
		if ok {
			d.setItems(v, items, key, at)
		}
	default:
		d.fail(key, key, describe(n)+"; expected "+expected(v.Type(), d.examples[key]))
	}
}

// accounts decodes the list of accounts; an item that is not a mapping keeps
// its place (so later accounts keep their numbers) but stays empty.
func (d *decoder) accounts(n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		v.Set(reflect.Zero(accountsType))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail("accounts", "accounts", describe(n)+"; expected "+expected(accountsType, ""))
		return
	}
	list := make([]Account, len(n.Content))
	for i, item := range n.Content {
		key := fmt.Sprintf("accounts[%d]", i)
		item = resolve(item)
		if item.Kind != yaml.MappingNode {
			d.fail(key, key, "must be a mapping of keys (name, tenant, client_id, …)")
			continue
		}
		d.mapping(item, reflect.ValueOf(&list[i]).Elem(), key+".", "")
	}
	v.Set(reflect.ValueOf(list))
}
