package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/emersion/go-smtp"
)

// dataReader reads the text after DATA (RFC 5321 4.1.1.4, 4.5.2) and hands
// on the message:
//
//   - only CRLF "." CRLF ends it (the first CRLF may be DATA's own): a bare
//     LF or lone CR next to a dot never does, so no command can be smuggled
//     inside a message;
//   - a line's leading dot is removed when more follows on the line (after
//     a CRLF or a bare LF, where clients stuff dots);
//   - every line end comes out as CRLF: a bare LF and a lone CR each become
//     one, so the spool and Microsoft only ever see CRLF;
//   - a line over maxLine octets, or a message over maxBytes, is a
//     permanent error: Read returns it, and drain reads on to the end so
//     the session can answer and go on.
type dataReader struct {
	r        *bufio.Reader
	maxBytes int64 // 0: no limit
	maxLine  int   // 0: no limit

	state    dataState
	bolCRLF  bool // the current line began after CRLF (or is the first)
	lineLen  int
	size     int64
	out      []byte // produced, not yet read
	outBuf   []byte
	done     bool
	draining bool // past a limit, or the reader gave up: find the end only

	limitErr *smtp.SMTPError // a limit was passed: the rest is read, not kept
	readErr  error           // the connection failed
}

type dataState int

const (
	atLineStart dataState = iota
	afterDot              // "." at a line start
	afterDotCR            // ".\r" at a line start
	inLine
	afterCR // "\r" within a line
)

const fillSize = 32 << 10

func newDataReader(r *bufio.Reader, maxBytes int64, maxLine int) *dataReader {
	return &dataReader{r: r, maxBytes: maxBytes, maxLine: maxLine, bolCRLF: true}
}

// Read returns the message, io.EOF at its end, the limit error once a limit
// is passed, or the connection's error.
func (d *dataReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 && !d.done && d.readErr == nil && d.limitErr == nil {
		d.fill()
	}
	if d.limitErr != nil {
		return 0, d.limitErr
	}
	if len(d.out) > 0 {
		n := copy(p, d.out)
		d.out = d.out[n:]
		return n, nil
	}
	if d.readErr != nil {
		return 0, d.readErr
	}
	return 0, io.EOF
}

// drain reads to the end of the data, keeping nothing. It returns the
// connection's error, if any: then the session cannot go on.
func (d *dataReader) drain() error {
	d.draining = true
	for !d.done && d.readErr == nil {
		d.fill()
		d.out = nil
	}
	return d.readErr
}

// fill turns input into output until there is some, or the end, or a
// limit is passed.
func (d *dataReader) fill() {
	d.out = d.outBuf[:0]
	defer func() { d.outBuf = d.out[:0] }() // grown once to what a message needs
	for len(d.out) < fillSize && !d.done && (d.limitErr == nil || d.draining) {
		if d.state == inLine {
			// Fast path: copy a run of ordinary bytes at once.
			if b, _ := d.r.Peek(d.r.Buffered()); len(b) > 0 {
				i := bytes.IndexAny(b, "\r\n")
				if i < 0 {
					i = len(b)
				}
				i = min(i, fillSize-len(d.out))
				if i > 0 {
					d.text(b[:i])
					d.r.Discard(i)
					continue
				}
			}
		}
		c, err := d.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.readErr = err
			return
		}
		d.step(c)
	}
}

func (d *dataReader) step(c byte) {
	switch d.state {
	case atLineStart:
		if c == '.' {
			d.state = afterDot
			return
		}
		d.inLine(c)
	case afterDot:
		switch c {
		case '\r':
			d.state = afterDotCR
		case '\n': // a line of one dot ended by a bare LF: kept, not the end
			d.text([]byte{'.'})
			d.lineEnd(false)
		default: // RFC 5321 4.5.2: the leading dot of a longer line goes
			d.inLine(c)
		}
	case afterDotCR:
		if c == '\n' {
			if d.bolCRLF {
				d.done = true
				return
			}
			d.text([]byte{'.'}) // after a bare LF: a line of one dot
			d.lineEnd(true)
			return
		}
		d.text([]byte{'.'}) // a line of one dot ended by a lone CR
		d.newline()
		d.inLine(c)
	case inLine:
		d.inLine(c)
	case afterCR:
		if c == '\n' {
			d.lineEnd(true)
			return
		}
		d.newline() // a lone CR ends a line too, written as CRLF
		d.inLine(c)
	}
}

// inLine takes c within a line (no dot rules apply after a lone CR).
func (d *dataReader) inLine(c byte) {
	d.state = inLine
	switch c {
	case '\r':
		d.state = afterCR
	case '\n':
		d.lineEnd(false)
	default:
		d.text([]byte{c})
	}
}

// lineEnd writes CRLF and starts a line; crlf says whether the input had
// one there (only then may the next line end the data).
func (d *dataReader) lineEnd(crlf bool) {
	d.newline()
	d.state, d.bolCRLF = atLineStart, crlf
}

func (d *dataReader) newline() {
	d.count(2)
	d.lineLen = 0
	if d.limitErr == nil {
		d.out = append(d.out, '\r', '\n')
	}
}

func (d *dataReader) text(b []byte) {
	d.lineLen += len(b)
	if d.maxLine > 0 && d.lineLen > d.maxLine && d.limitErr == nil {
		d.limitErr = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("Message has a line longer than %d octets; RFC 5321 4.5.3.1.6 asks for at most 1000", d.maxLine)}
	}
	d.count(len(b))
	if d.limitErr == nil {
		d.out = append(d.out, b...)
	}
}

func (d *dataReader) count(n int) {
	d.size += int64(n)
	if d.maxBytes > 0 && d.size > d.maxBytes && d.limitErr == nil {
		d.limitErr = errTooBig
	}
}
