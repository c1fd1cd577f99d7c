package inbound

import (
	"bufio"
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

// pipe relays a logged-in session byte for byte until both directions have
// ended: client → upstream from fromClient (which holds what the client
// sent ahead of the login's answer), upstream → client from fromUp. When
// one direction ends at EOF, the connection it wrote to is half-closed (TCP
// FIN, TLS close_notify) so that end sees it, and the other direction has
// grace to finish (a reply still on its way); an error, or the grace
// running out, ends both at once. It returns the bytes each way.
func pipe(client net.Conn, fromClient io.Reader, up net.Conn, fromUp io.Reader, grace time.Duration) (in, out int64) {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		mu    sync.Mutex
		timer *time.Timer
	)
	both := func() { once.Do(func() { client.Close(); up.Close() }) }
	// ended is called when the direction writing to dst has ended.
	ended := func(dst net.Conn, err error) {
		if err != nil {
			both()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		mu.Lock()
		if timer == nil {
			timer = time.AfterFunc(grace, both)
		}
		mu.Unlock()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		var err error
		in, err = copyAdaptive(up, fromClient)
		ended(up, err)
	}()
	go func() {
		defer wg.Done()
		var err error
		out, err = copyAdaptive(client, fromUp)
		ended(client, err)
	}()
	wg.Wait()
	mu.Lock()
	if timer != nil {
		timer.Stop()
	}
	mu.Unlock()
	both()
	return in, out
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
