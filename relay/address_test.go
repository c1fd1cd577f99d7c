package relay

import (
	"strings"
	"testing"
)

func TestParsePath_RFC5321Mailboxes(t *testing.T) {
	long := strings.Repeat("v", 200) // VERP: far beyond 64, within 256
	for _, tt := range []struct {
		in       string
		utf8     bool
		want     string // Address.String(); "" with err empty means <>
		rest     string
		err      string // part of the error
		nonASCII bool
	}{
		{in: "<a@b.example>", want: "a@b.example"},
		{in: "<a@b.example> SIZE=10", want: "a@b.example", rest: " SIZE=10"},
		{in: "a@b.example SIZE=10", want: "a@b.example", rest: " SIZE=10"}, // no brackets: lenient
		{in: "<>", want: ""},
		{in: "<> BODY=8BITMIME", want: "", rest: " BODY=8BITMIME"},
		{in: "<@relay.example,@other.example:a@b.example>", want: "a@b.example"},
		{in: "<first.last+tag@b.example>", want: "first.last+tag@b.example"},
		{in: "<a..b@b.example>", want: "a..b@b.example"},
		{in: `<"john smith"@b.example>`, want: `"john smith"@b.example`},
		{in: `<"john\ smith"@b.example>`, want: `"john smith"@b.example`},
		{in: `<"plain"@b.example>`, want: "plain@b.example"},
		{in: `<"x@attacker.example> ENVID="@contoso.test>`, want: `"x@attacker.example> ENVID="@contoso.test`},
		{in: "<a@[192.0.2.1]>", want: "a@[192.0.2.1]"},
		{in: "<a@[IPv6:2001:db8::1]>", want: "a@[IPv6:2001:db8::1]"},
		{in: "<" + long + "@b.example>", want: long + "@b.example"},
		{in: "<ålerts@bücher.example>", utf8: true, want: "ålerts@bücher.example"},
		{in: `<"å b"@b.example>`, utf8: true, want: `"å b"@b.example`},

		{in: "<ålerts@b.example>", err: "SMTPUTF8", nonASCII: true},
		{in: "<a@bücher.example>", err: "SMTPUTF8", nonASCII: true},
		{in: "<" + strings.Repeat("v", 250) + "@b.example>", err: "256"},
		{in: "<a@" + strings.Repeat("d", 300) + ">", err: "256"},
		{in: "<" + strings.Repeat("v", 100000) + "@b.example>", err: "256"},
		{in: "<a\x00b@b.example>", err: "U+0000"},
		{in: "<a b@b.example>", err: "space"},
		{in: `<"a\"b"@b.example>`, err: `'"' or '\'`},
		{in: `<"a\\b"@b.example>`, err: `'"' or '\'`},
		{in: `<"a` + "\x00" + `b"@b.example>`, err: "U+0000"},
		{in: `<"ab@b.example>`, err: "unterminated"},
		{in: `<""@b.example>`, err: "empty local part"},
		{in: "<a@b.example", err: "'>'"},
		{in: "<a@b..example>", err: "malformed domain"},
		{in: "<a@-b.example>", err: "malformed domain"},
		{in: "<a@b_c.example>", err: "malformed domain"},
		{in: "<a@b.example\x00>", err: "malformed domain"},
		{in: "<a@b@c.example>", err: "malformed domain"},
		{in: "<a@[300.0.0.1]>", err: "address literal"},
		{in: "<a@[IPv6:fe80::1%eth0]>", err: "address literal"},
		{in: "<a@>", err: "empty domain"},
		{in: "<a>", err: "no '@'"},
		{in: "<a\u2028b@b.example>", utf8: true, err: "U+2028"},
		{in: "<a\xffb@b.example>", utf8: true, err: "UTF-8"},
		{in: "a@b.example>", err: "unexpected"},
	} {
		a, rest, err := parsePath(tt.in, true, tt.utf8)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || err.nonASCII != tt.nonASCII {
				t.Errorf("parsePath(%.60q) = %q, %v; want error with %q (nonASCII %v)", tt.in, a.String(), err, tt.err, tt.nonASCII)
			}
			continue
		}
		if err != nil || a.String() != tt.want || rest != tt.rest {
			t.Errorf("parsePath(%.60q) = %q, %q, %v; want %q, %q", tt.in, a.String(), rest, err, tt.want, tt.rest)
		}
	}
	if _, _, err := parsePath("<>", false, false); err == nil {
		t.Error("<> accepted as a recipient")
	}
}

// FuzzParsePath: what the parser accepts, written back, parses to the same
// address, fits RFC 5321's path limit and can be pasted into a command
// line without becoming anything but one path.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"<a@b.example>", "<>", "<a@b.example> SIZE=10 BODY=8BITMIME", "a@b.example", "<@r.example:a@b.example>",
		`<"x@attacker.example> ENVID="@contoso.test>`, `<"v@example.com> NOTIFY=NEVER ORCPT=rfc822;x"@example.org>`,
		`<"john smith"@b.example>`, `<"john\ smith"@b.example>`, `<"a\"b"@b.example>`, "<a\x00b@b.example>",
		"<ålerts@bücher.example>", "<a@[192.0.2.1]>", "<a@[IPv6:::1]>", "<a..b@b.example>", "<a@b.example\r\nRCPT TO:<c@d.example>",
		`<"a>b"@c.example> X=<y@z.example>`, "<" + strings.Repeat("v", 240) + "@b.example>",
	} {
		f.Add(s, true, false)
		f.Add(s, false, true)
	}
	f.Fuzz(func(t *testing.T, s string, null, smtputf8 bool) {
		a, rest, err := parsePath(s, null, smtputf8)
		if err != nil {
			for _, r := range err.Error() {
				if r < 32 || r >= 127 {
					t.Fatalf("error %q is not printable ASCII: it goes into a reply", err)
				}
			}
			return
		}
		if !strings.HasSuffix(s, rest) {
			t.Fatalf("rest %q is not what followed the path in %q", rest, s)
		}
		if a.IsNull() {
			if !null || !strings.HasPrefix(s, "<>") {
				t.Fatalf("%q parsed as <>", s)
			}
			return
		}
		w := a.String()
		if len(w)+2 > maxPath {
			t.Fatalf("%q: path of %d octets accepted", w, len(w)+2)
		}
		if !smtputf8 && !a.IsASCII() {
			t.Fatalf("%q: non-ASCII without SMTPUTF8", w)
		}
		outside := w // what lies outside the quotes must be plain
		if strings.HasPrefix(w, `"`) {
			end := strings.IndexByte(w[1:], '"')
			if end < 0 {
				t.Fatalf("%q: unbalanced quotes", w)
			}
			outside = w[end+2:]
			if !strings.HasPrefix(outside, "@") {
				t.Fatalf("%q: the quoted local part is not followed by '@'", w)
			}
		}
		for i := 0; i < len(w); i++ {
			if c := w[i]; c < 32 || c == 127 || c == '\\' {
				t.Fatalf("%q holds %q", w, c)
			}
		}
		if strings.ContainsAny(outside, " <>\"\\") {
			t.Fatalf("%q: space, quote or angle bracket outside the quotes", w)
		}
		b, rest2, err := parsePath("<"+w+">", false, smtputf8)
		if err != nil || rest2 != "" || b != a {
			t.Fatalf("%q written as %q parses to %+v, %q, %v; want %+v", s, w, b, rest2, err, a)
		}
		if c, err := ParseAddress(w, smtputf8); err != nil || c != a {
			t.Fatalf("ParseAddress(%q) = %+v, %v; want %+v", w, c, err, a)
		}
	})
}
