package configs

import (
	"reflect"
	"time"

	"go.yaml.in/yaml/v3"
)

// Masked is what a secret value prints as.
const Masked = "******"

// Effective renders c as YAML with every secret masked, for check-config and
// support requests. Secrets are fields tagged secret:"true".
func Effective(c *Config) ([]byte, error) {
	return yaml.Marshal(toPlain(reflect.ValueOf(*c)))
}

var durationType = reflect.TypeOf(time.Duration(0))

// toPlain turns a config value into maps, lists and scalars, in key order of
// the struct, durations as "5m" and secrets masked.
func toPlain(v reflect.Value) any {
	switch {
	case v.Type() == durationType:
		return durationString(time.Duration(v.Int()))
	case v.Kind() == reflect.Struct:
		node := &yaml.Node{Kind: yaml.MappingNode}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			if tag == "" {
				continue
			}
			val := toPlain(v.Field(i))
			if f.Tag.Get("secret") == "true" && v.Field(i).String() != "" {
				val = Masked
			}
			var k, vn yaml.Node
			k.SetString(tag)
			if err := vn.Encode(val); err != nil {
				continue
			}
			node.Content = append(node.Content, &k, &vn)
		}
		return node
	case v.Kind() == reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = toPlain(v.Index(i))
		}
		return out
	default:
		return v.Interface()
	}
}
