package configs

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// parseValue reads text as a value of type t (a scalar field type, or one
// item of a list). On failure it returns a message for the user that shows
// the value and what would be right, e.g. `"sixteen" is not a whole number
// — e.g. 100`; example is the key's default as written in YAML, or "".
func parseValue(t reflect.Type, text, example string) (reflect.Value, string) {
	if t == durationType {
		d, msg := parseDuration(text)
		return reflect.ValueOf(d), msg
	}
	s := strings.TrimSpace(text)
	v := reflect.New(t).Elem()
	switch t.Kind() {
	case reflect.String:
		v.SetString(text) // exactly as typed: secrets have spaces and $ too
	case reflect.Bool:
		b, ok := parseBool(s)
		if !ok {
			return v, fmt.Sprintf("%q is not true or false", text)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		if example == "" {
			example = "100"
		}
		n, err := strconv.ParseInt(s, 10, t.Bits())
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return v, fmt.Sprintf("%s is too large — e.g. %s", s, example)
			}
			return v, fmt.Sprintf("%q is not a whole number — e.g. %s", text, example)
		}
		v.SetInt(n)
	case reflect.Float64:
		if example == "" {
			example = "0.5"
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return v, fmt.Sprintf("%q is not a number — e.g. %s", text, example)
		}
		v.SetFloat(f)
	default:
		return v, fmt.Sprintf("cannot be set from text (a %s)", t) // no such field today
	}
	return v, ""
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "true", "yes", "on", "1":
		return true, true
	case "false", "no", "off", "0":
		return false, true
	}
	return false, false
}

var daysOrWeeks = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)([dw])$`)

// parseDuration reads a Go duration (90s, 5m, 1h30m). A bare number is
// refused rather than read as nanoseconds: "read_timeout: 300" meant
// seconds, and 300ns would time every client out at once. Only 0 needs no
// unit.
func parseDuration(text string) (time.Duration, string) {
	s := strings.TrimSpace(text)
	if s == "0" {
		return 0, ""
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return 0, fmt.Sprintf("%s has no unit — e.g. %s", s, unitExamples(s))
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, ""
	}
	if m := daysOrWeeks.FindStringSubmatch(s); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		unit, hours := "d (days)", n*24
		if m[2] == "w" {
			unit, hours = "w (weeks)", n*24*7
		}
		return 0, fmt.Sprintf("%q: %s is not a unit — write hours, e.g. %sh", text, unit, strconv.FormatFloat(hours, 'f', -1, 64))
	}
	return 0, fmt.Sprintf("%q is not a duration — a number with a unit (ms, s, m, h), e.g. 90s, 5m, 24h or 1h30m", text)
}

// unitExamples suggests what a bare number probably meant: 300 → "300s or
// 5m", 7 → "7s or 7m".
func unitExamples(n string) string {
	secs := n + "s"
	if i, err := strconv.ParseInt(n, 10, 64); err == nil && i > 0 && i < math.MaxInt64/int64(time.Second) {
		if alt := durationString(time.Duration(i) * time.Second); alt != secs {
			return secs + " or " + alt
		}
	}
	return secs + " or " + n + "m"
}

// expected says what a key of type t takes, for "is a list; expected …";
// example is the key's default as written, or "".
func expected(t reflect.Type, example string) string {
	suffix := ""
	if example != "" {
		suffix = " such as " + example
	}
	switch {
	case t == durationType:
		if example == "" {
			suffix = " such as 5m"
		}
		return "a duration" + suffix
	case t == reflect.TypeOf([]Account{}):
		return "a list of accounts (- name: …)"
	case t.Kind() == reflect.Slice:
		return "a list" + suffix
	case t.Kind() == reflect.Struct:
		return "a mapping of keys (" + childKeys(t) + ")"
	case t.Kind() == reflect.String:
		return "a text value"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Float64:
		return "a number" + suffix
	}
	return "a whole number" + suffix
}

// childKeys lists a section's keys for a message: "addr, hostname, …".
func childKeys(t reflect.Type) string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" {
			names = append(names, tag)
		}
	}
	if len(names) > 3 {
		names = append(names[:3], "…")
	}
	return strings.Join(names, ", ")
}

// defaultExamples renders every key's default as it would be written, for
// "e.g." in messages: listen.max_sessions → "100".
func defaultExamples() map[string]string {
	out := map[string]string{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := t.Field(i).Tag.Get("yaml")
			if tag == "" {
				continue
			}
			f := v.Field(i)
			switch {
			case f.Type() == durationType:
				if f.Int() != 0 {
					out[prefix+tag] = durationString(time.Duration(f.Int()))
				}
			case f.Kind() == reflect.Struct:
				walk(f, prefix+tag+".")
			case f.Kind() == reflect.Int, f.Kind() == reflect.Int64:
				out[prefix+tag] = strconv.FormatInt(f.Int(), 10)
			case f.Kind() == reflect.Float64:
				if f.Float() != 0 {
					out[prefix+tag] = strconv.FormatFloat(f.Float(), 'f', -1, 64)
				}
			case f.Kind() == reflect.Slice && f.Len() > 0:
				items := make([]string, f.Len())
				for j := range items {
					if item := f.Index(j); item.Type() == durationType {
						items[j] = durationString(time.Duration(item.Int()))
					} else {
						items[j] = fmt.Sprint(item.Interface())
					}
				}
				out[prefix+tag] = "[" + strings.Join(items, ", ") + "]"
			}
		}
	}
	walk(reflect.ValueOf(Default()), "")
	return out
}

// splitList reads a comma-separated list (environment, flags, and a single
// YAML value given for a list). An empty text is an empty list.
func splitList(text string) []string {
	if strings.TrimSpace(text) == "" {
		return nil
	}
	parts := strings.Split(text, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}
