package inbound

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// lineReader reads the CRLF-ended lines of a protocol's login phase. What
// it has buffered beyond them belongs to the session and is relayed first
// (its r is the source pipe reads from).
type lineReader struct {
	r *bufio.Reader
}

func newLineReader(c io.Reader) *lineReader { return &lineReader{r: bufio.NewReaderSize(c, 4096)} }

// rest is what reads on after the login phase: the bytes l holds beyond
// the lines read (a pipelining client's next command), then c itself —
// so a session that idles for hours does not keep l's 4 KiB buffer.
func (l *lineReader) rest(c io.Reader) io.Reader {
	n := l.r.Buffered()
	if n == 0 {
		return c
	}
	b, _ := l.r.Peek(n)
	return io.MultiReader(bytes.NewReader(bytes.Clone(b)), c)
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its line ending; longer than max
// is errLineTooLong.
func (l *lineReader) readLine(max int) (string, error) {
	var b []byte
	for {
		frag, err := l.r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > max {
			return "", errLineTooLong
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// pipe relays a logged-in session byte for byte in two goroutines of its
// own and returns at once; done gets the bytes each way when both
// directions have ended: client → upstream from fromClient (which holds
// what the client sent ahead of the login's answer), upstream → client
// from fromUp.
//
// When the client half-closes (printf … | nc -N), its EOF is not passed on:
// an IMAP or POP3 server takes EOF as the client gone and may close — and,
// with our EOF unread, reset — before its last replies are out. Microsoft
// ends the session itself after LOGOUT or QUIT; otherwise it ends once the
// upstream has said nothing for grace (at most 5 s: a client that closed
// without LOGOUT looks the same). When the upstream ends at EOF, the
// client is half-closed (TCP FIN, TLS close_notify) so it sees the end,
// and gets grace to finish. An error ends both at once.
func pipe(client net.Conn, fromClient io.Reader, up net.Conn, fromUp io.Reader, grace time.Duration, done func(in, out int64)) {
	var (
		once    sync.Once
		mu      sync.Mutex
		timer   *time.Timer
		running = 2
		in, out int64
		lastOut atomic.Int64 // when bytes last went upstream → client (UnixNano)
		writing atomic.Bool  // a write to the client is under way (it may be slow to read)
	)
	lastOut.Store(time.Now().UnixNano())
	both := func() { once.Do(func() { client.Close(); up.Close() }) }
	// idle ends the session once the upstream has been silent for quiet
	// (grace, at most quietAfterEOF): long enough for a reply on its way,
	// short enough that a client that simply closed without LOGOUT (most
	// do) does not hold an upstream session and an account slot for long.
	quiet := min(grace, quietAfterEOF)
	var idle func()
	idle = func() {
		if q := time.Since(time.Unix(0, lastOut.Load())); q < quiet || writing.Load() {
			if writing.Load() {
				q = 0 // a reply still going out is not quiet; writeTimeout bounds it
			}
			mu.Lock()
			timer = time.AfterFunc(quiet-q, idle)
			mu.Unlock()
			return
		}
		both()
	}
	// ended is called when the direction writing to dst has ended.
	ended := func(dst net.Conn, err error) {
		if err != nil {
			both()
		} else if dst == client {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}
		mu.Lock()
		running--
		last := running == 0
		switch {
		case last && timer != nil:
			timer.Stop()
		case !last && timer == nil && err == nil:
			timer = time.AfterFunc(quiet, idle)
		}
		mu.Unlock()
		if last {
			both()
			done(in, out) // in and out were written before mu was taken
		}
	}
	go func() {
		n, err := copyAdaptive(timedWriter{up, nil, nil}, fromClient)
		in = n
		ended(up, err)
	}()
	go func() {
		n, err := copyAdaptive(timedWriter{client, &lastOut, &writing}, fromUp)
		out = n
		ended(client, err)
	}()
}

// quietAfterEOF bounds how long a session whose client has closed its
// side waits for the upstream to say something more.
const quietAfterEOF = 5 * time.Second

// writeTimeout is how long a write may wait for the other side to read: a
// client that asks for a FETCH and never reads it (or an upstream that
// stops reading) does not hold the session, and an account slot, for ever.
var writeTimeout = 5 * time.Minute

// timedWriter writes to c with writeTimeout, and notes in last (if set)
// when bytes were last written and in writing (if set) while a write is
// under way.
type timedWriter struct {
	c       net.Conn
	last    *atomic.Int64
	writing *atomic.Bool
}

func (w timedWriter) Write(p []byte) (int, error) {
	if w.writing != nil {
		w.writing.Store(true)
		defer w.writing.Store(false)
	}
	w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := w.c.Write(p)
	if w.last != nil {
		w.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// copyAdaptive copies src to dst like io.Copy, but a direction that has
// only said little so far waits in a 512-byte buffer; the first read that
// fills it (a FETCH, a download) switches the direction to a 32 KiB buffer
// for good. A session that mostly idles (IDLE can last hours) then holds
// 1 KiB for its two directions instead of io.Copy's 64 KiB, and a busy one
// copies as fast as io.Copy.
func copyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	var total int64
	buf := make([]byte, 512)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr == nil && w < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		if n == len(buf) && len(buf) < 32<<10 {
			buf = make([]byte, 32<<10)
		}
	}
}
