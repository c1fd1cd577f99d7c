package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzSendmailMessage feeds arbitrary messages and command lines to the
// sendmail entry point's parsers: they never panic, a Bcc: field never
// survives into what is sent, and the header gains From:, Date: and
// Message-ID: when missing.
func FuzzSendmailMessage(f *testing.F) {
	f.Add("To: a@b.example\nBcc: c@d.example\nSubject: x\n\nbody\n.\nmore\n", "-t -i")
	f.Add("Subject: x\r\n\r\nbody\r\n", "-f x@y.example -oem z@w.example")
	f.Add("just text, no header\n", "a@b.example")
	f.Add("Bcc: x@y\n\tfolded@z\nTo: q@r\n\n", "-t")
	f.Add("", "-F")
	f.Fuzz(func(t *testing.T, msg, args string) {
		a, err := parseSendmailArgs(strings.Fields(args))
		if err != nil {
			return
		}
		m, err := readSendmailMessage(bufio.NewReader(strings.NewReader(msg)), a)
		if err != nil {
			return
		}
		head, _ := splitHeader(m.data)
		for _, line := range bytes.Split(head, []byte("\n")) {
			if len(line) >= 4 && strings.EqualFold(string(line[:4]), "bcc:") {
				t.Fatalf("Bcc survived: %q", m.data)
			}
		}
		for _, h := range []string{"Date:", "Message-ID:"} {
			if !bytes.Contains(m.data, []byte(h)) && !bytes.Contains(bytes.ToLower(m.data), bytes.ToLower([]byte(h))) {
				t.Fatalf("no %s in %q", h, m.data)
			}
		}
	})
}
