package inbound

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
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
// from fromUp. When one direction ends at EOF, the connection it wrote to
// is half-closed (TCP FIN, TLS close_notify) so that end sees it, and the
// other direction has grace to finish (a reply still on its way); an
// error, or the grace running out, ends both at once.
func pipe(client net.Conn, fromClient io.Reader, up net.Conn, fromUp io.Reader, grace time.Duration, done func(in, out int64)) {
	var (
		once    sync.Once
		mu      sync.Mutex
		timer   *time.Timer
		running = 2
		in, out int64
	)
	both := func() { once.Do(func() { client.Close(); up.Close() }) }
	// ended is called when the direction writing to dst has ended.
	ended := func(dst net.Conn, err error) {
		if err != nil {
			both()
		} else if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		mu.Lock()
		running--
		last := running == 0
		switch {
		case last && timer != nil:
			timer.Stop()
		case !last && timer == nil && err == nil:
			timer = time.AfterFunc(grace, both)
		}
		mu.Unlock()
		if last {
			both()
			done(in, out) // in and out were written before mu was taken
		}
	}
	go func() {
		n, err := copyAdaptive(up, fromClient)
		in = n
		ended(up, err)
	}()
	go func() {
		n, err := copyAdaptive(client, fromUp)
		out = n
		ended(client, err)
	}()
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
