package relay

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

// checkCRLFText fails unless b is text a mail system takes as it is: line
// ends only CRLF, no NUL, no line over 998 octets (RFC 5322 2.1.1, RFC
// 2045 2.8).
func checkCRLFText(t *testing.T, b []byte) {
	t.Helper()
	checkLineEnds(t, b)
	if i := bytes.IndexByte(b, 0); i >= 0 {
		t.Fatalf("NUL at %d", i)
	}
	for _, l := range bytes.Split(b, []byte("\r\n")) {
		if len(l) > 998 {
			t.Fatalf("line of %d octets: %.80q…", len(l), l)
		}
	}
}

// fieldNames returns the names of a header block's fields, failing on a
// line that is neither a field nor a continuation.
func fieldNames(t *testing.T, block string) []string {
	t.Helper()
	var names []string
	for _, l := range strings.Split(block, "\r\n") {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		name, _, ok := strings.Cut(l, ":")
		if !ok || strings.ContainsAny(name, " \t") {
			t.Fatalf("line %q is not a header field", l)
		}
		names = append(names, name)
	}
	return names
}

// FuzzBuildDSN: whatever the envelope addresses, reply and original
// headers hold, the DSN is valid CRLF text whose header and
// delivery-status fields are only the ones the relay writes.
func FuzzBuildDSN(f *testing.F) {
	f.Add("app@contoso.com", "a@x.test", 554, "5.2.252", "SendAsDenied; mbx not allowed to send as app", []byte("Subject: original\r\n"))
	f.Add(`"john smith"@contoso.com`, "пользователь@example.com", 550, "5.1.1", "User unknown", []byte("From: a\r\n b\r\nTo: c\r\n"))
	f.Add("a@b.example\r\nBcc: victim@example.com", "c@d.example\r\nX-Injected: 1", 451, "4.4.7", "expired\r\nX: y", []byte("Subject: x\rY\n\x00Z"))
	f.Add("x@attacker.example> ENVID=@contoso.test", "v@example.com> NOTIFY=NEVER", 421, "", "multi\nline", []byte(strings.Repeat("h", 2000)+"\r\n"))
	f.Add("", "r@x.test", 0, "5.7.1\r\nX-Evil: 1", "", []byte{})
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, from, rcpt string, code int, enhanced, text string, headers []byte) {
		m := &queue.Meta{ID: "0123456789abcdef0123", From: from, Account: "helpdesk", Arrived: now, LastAttempt: now}
		failed := []queue.Recipient{
			{Addr: rcpt, Last: &queue.Reply{Code: code, Enhanced: enhanced, Text: text}},
			{Addr: rcpt + rcpt},
		}
		h := originalHeaders(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(headers)), nil })
		dsn := buildDSN("relay.test", "smtp.office365.com", "Microsoft 365", "mbx@contoso.com", m, failed, h, now)
		checkCRLFText(t, dsn)
		head, body, ok := strings.Cut(string(dsn), "\r\n\r\n")
		if !ok {
			t.Fatal("no header block")
		}
		want := "From To Subject Date Message-ID Auto-Submitted MIME-Version Content-Type"
		if got := strings.Join(fieldNames(t, head), " "); got != want {
			t.Fatalf("header fields %q, want %q", got, want)
		}
		_, status, ok := strings.Cut(body, "Content-Type: message/delivery-status\r\n\r\n")
		if !ok {
			t.Fatal("no delivery-status part")
		}
		status, _, _ = strings.Cut(status, "\r\n--oauthrelay-")
		allowed := map[string]bool{"Reporting-MTA": true, "X-Oauthrelay-Queue-ID": true, "Arrival-Date": true,
			"Final-Recipient": true, "Action": true, "Status": true, "Remote-MTA": true, "Diagnostic-Code": true, "Last-Attempt-Date": true}
		for _, name := range fieldNames(t, status) {
			if !allowed[name] {
				t.Fatalf("delivery-status holds a field %q", name)
			}
		}
		if n := strings.Count(status, "Final-Recipient: "); n != len(failed) {
			t.Fatalf("%d Final-Recipient fields for %d recipients", n, len(failed))
		}
	})
}
