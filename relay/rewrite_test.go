package relay

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// countBare counts CRs not followed by LF and LFs not preceded by CR.
func countBare(b []byte) (cr, lf int) {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			cr++
		}
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			lf++
		}
	}
	return cr, lf
}

func TestRewriteFrom_HeaderLineAcrossReadBuffer(t *testing.T) {
	// A header line exactly as long as the reader's buffer ends in a read
	// of its CRLF alone, which is not the empty line ending the header.
	long := "Subject: " + strings.Repeat("x", 16-len("Subject: "))
	in := long + "\r\nFrom: <app@contoso.com>\r\n\r\nbody\r\n"
	out, _ := io.ReadAll(rewriteFrom(bufio.NewReaderSize(strings.NewReader(in), 16), "m@contoso.com"))
	want := long + "\r\nFrom: m@contoso.com\r\nReply-To: <app@contoso.com>\r\n\r\nbody\r\n"
	if string(out) != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
}

func TestRewriteFrom_EmptyFromGetsNoReplyTo(t *testing.T) {
	out, _ := io.ReadAll(rewriteFrom(strings.NewReader("From:\r\nSubject: x\r\n\r\nbody\r\n"), "m@contoso.com"))
	if want := "Subject: x\r\nFrom: m@contoso.com\r\n\r\nbody\r\n"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

// FuzzRewriteFrom: the rewrite adds no bare CR or LF, leaves the body as it
// was, and leaves exactly one From: field, the mailbox's, when there was one.
func FuzzRewriteFrom(f *testing.F) {
	for _, s := range []string{
		"Received: from x\r\nFrom: \"App\"\r\n <app@contoso.com>\r\nSubject: hi\r\n\r\nFrom: not a header\r\nbody\r\n",
		"From: a@b.c\r\nReply-To: r@b.c\r\n\r\nx\r\n",
		"Subject: x\r\n\r\nbody\r\n",
		"From: a@b.c\nSubject: bare LF\n\nbody\n",
		"From: a\rb@c\r\n\r\n",
		"From: x\r\nFrom: y\r\n\r\n",
		" continuation first\r\nFrom: x\r\n\r\n",
		"From:\r\n\r\n",
		"Subject: " + strings.Repeat("x", 7) + "\r\nFrom: <a@b.c>\r\n\r\nbody",
	} {
		f.Add([]byte(s), 16)
		f.Add([]byte(s), 4096)
	}
	f.Fuzz(func(t *testing.T, in []byte, bufSize int) {
		const mailbox = "mbx@contoso.com"
		out, err := io.ReadAll(rewriteFrom(bufio.NewReaderSize(bytes.NewReader(in), max(16, bufSize%(1<<16))), mailbox))
		if err != nil {
			t.Fatal(err)
		}
		inCR, inLF := countBare(in)
		outCR, outLF := countBare(out)
		if outCR > inCR || outLF > inLF {
			t.Fatalf("bare CR/LF %d/%d in, %d/%d out:\n%q\n%q", inCR, inLF, outCR, outLF, in, out)
		}
		// Split both at the end of the header, by the rewrite's rules.
		inHead, inBody, ok := splitHeader(in)
		if !ok || len(inHead) >= maxHeaderRewrite {
			if !bytes.Equal(in, out) {
				t.Fatalf("no complete header, yet changed:\n%q\n%q", in, out)
			}
			return
		}
		outHead, outBody, _ := splitHeader(out)
		if !bytes.Equal(inBody, outBody) {
			t.Fatalf("body changed:\n%q\n%q", inBody, outBody)
		}
		hadFrom := len(headerFields(inHead, "from")) > 0
		froms := headerFields(outHead, "from")
		if hadFrom && (len(froms) != 1 || froms[0] != "From: "+mailbox+"\r\n") {
			t.Fatalf("From fields after the rewrite: %q", froms)
		}
		if !hadFrom && !bytes.Equal(in, out) {
			t.Fatalf("no From, yet changed:\n%q\n%q", in, out)
		}
	})
}

// splitHeader cuts b after the first line that is empty but for its line
// end, as rewriteFrom finds the end of the header.
func splitHeader(b []byte) (head, body []byte, ok bool) {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return nil, nil, false
		}
		line := b[i : i+j+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return b[:i+j+1], b[i+j+1:], true
		}
		i += j + 1
	}
	return nil, nil, false
}

// headerFields returns the fields named name (lower case), each with its
// continuation lines.
func headerFields(head []byte, name string) []string {
	var out []string
	lines := strings.SplitAfter(string(head), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		n, _, _ := strings.Cut(l, ":")
		if strings.ToLower(strings.TrimSpace(n)) != name {
			continue
		}
		for i+1 < len(lines) && lines[i+1] != "" && (lines[i+1][0] == ' ' || lines[i+1][0] == '\t') {
			i++
			l += lines[i]
		}
		out = append(out, l)
	}
	return out
}

// A From: field folded over very many lines costs time in proportion to
// its size (it was quadratic: 5 s for 60,000 lines, on every attempt).
func TestRewriteFrom_LongFoldLinear(t *testing.T) {
	in := "From: a\r\n" + strings.Repeat(" x\r\n", 60000) + "\r\nbody" // within maxHeaderRewrite
	start := time.Now()
	out, _ := io.ReadAll(rewriteFrom(bufio.NewReader(strings.NewReader(in)), "m@contoso.com"))
	if d := time.Since(start); d > time.Second {
		t.Errorf("rewrite took %v", d)
	}
	if !strings.HasPrefix(string(out), "From: m@contoso.com\r\n") {
		t.Errorf("not rewritten: %.40q", out)
	}
}
