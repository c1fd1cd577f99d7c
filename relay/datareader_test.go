package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/textproto"
	"testing"
)

// readData runs a dataReader over in and returns what it handed on, the
// error Read ended with, and how much input it consumed (drain included).
func readData(in []byte, maxBytes int64, maxLine int) (out []byte, consumed int, err error) {
	src := bytes.NewReader(in)
	br := bufio.NewReaderSize(src, 16) // small: the fast path meets buffer ends often
	d := newDataReader(br, maxBytes, maxLine)
	out, err = io.ReadAll(d)
	d.drain()
	return out, len(in) - src.Len() - br.Buffered(), err
}

// FuzzDataReader: whatever the client sends, the message ends exactly at
// the first CRLF "." CRLF and nowhere else, what is handed on is CRLF text,
// and a message a conforming client dot-stuffed comes out as it went in.
func FuzzDataReader(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nlast line\r\r\n.\r\n", "a\r.\r\nb\r\n.\r\n", "a\r\n.\rX\r\n.\r\n", "a\n.\r\nb\r\n.\r\n",
		"..a\r\nb\n..c\r\n.\r\n", ".\r\n", "x\n.\nMAIL FROM:<e@x>\r\n.\r\n", "x\r\n.\r", "no end", "\r\n.\r\nafter",
	} {
		f.Add([]byte(s), 8)
	}
	f.Fuzz(func(t *testing.T, in []byte, maxLine int) {
		maxLine = 1 + maxLine&0xff
		out, consumed, err := readData(in, 0, 0)

		// The end is the first CRLF.CRLF, DATA's own CRLF counting as the first.
		end := bytes.Index(append([]byte("\r\n"), in...), []byte("\r\n.\r\n"))
		switch {
		case end < 0 && !errors.Is(err, io.ErrUnexpectedEOF):
			t.Fatalf("no CRLF.CRLF in %q, yet Read ended with %v", in, err)
		case end >= 0 && (err != nil || consumed != end+3):
			t.Fatalf("%q: ended with %v after %d octets, want the end after %d", in, err, consumed, end+3)
		}
		checkLineEnds(t, out)

		// A conforming client: CRLF text, dot-stuffed by net/textproto.
		var content []byte
		if end >= 0 {
			content = out
		}
		var wire bytes.Buffer
		w := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
		w.Write(content)
		w.Close()
		again, _, err := readData(wire.Bytes(), 0, 0)
		if len(content) == 0 {
			content = []byte("\r\n") // textproto sends an empty message as one empty line
		}
		if err != nil || !bytes.Equal(again, content) {
			t.Fatalf("%q sent as %q came back as %q, %v", content, wire.Bytes(), again, err)
		}

		// Limits: past one, Read fails with it, and drain still finds the end.
		limited, consumed2, err := readData(in, 0, maxLine)
		longest := 0
		for _, l := range bytes.Split(out, []byte("\r\n")) {
			longest = max(longest, len(l))
		}
		if longest > maxLine && end >= 0 {
			if err == nil || err.Error() == "" {
				t.Fatalf("a line of %d octets passed a limit of %d", longest, maxLine)
			}
		} else if end >= 0 && (err != nil || !bytes.Equal(limited, out)) {
			t.Fatalf("within the line limit, got %q, %v", limited, err)
		}
		if consumed2 != consumed {
			t.Fatalf("with a line limit %d octets were read, without %d", consumed2, consumed)
		}
	})
}

// checkLineEnds fails unless every CR and LF in b is part of a CRLF.
func checkLineEnds(t *testing.T, b []byte) {
	t.Helper()
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			t.Fatalf("lone CR at %d: %q", i, b[max(0, i-40):min(len(b), i+40)])
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			t.Fatalf("bare LF at %d: %q", i, b[max(0, i-40):min(len(b), i+40)])
		}
	}
}
