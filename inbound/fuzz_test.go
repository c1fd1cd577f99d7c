package inbound

import (
	"io"
	"net"
	"testing"
	"time"
)

// fuzzSession feeds data, as a client would send it, to one session of
// protocol and requires it to end — answered, refused or relayed — within
// a few seconds of the client going away, without a panic.
func fuzzSession(f *testing.F, protocol string, seeds []string) {
	tlsCfg, pool := testTLS(f)
	var up *fakeUpstream
	if protocol == IMAP {
		up = startUpstream(f, tlsCfg, []string{"tok"}, imapUpstream(""))
	} else {
		up = startUpstream(f, tlsCfg, []string{"tok"}, pop3Upstream("+OK User successfully authenticated."))
	}
	h := newHarness(f, pool, up.addr, up.addr, &fakeTokens{tokens: []string{"tok"}}, func(o *Options) {
		o.Events = Events{} // nobody reads the harness's channels here
		o.LockoutBase = time.Millisecond
		o.LockoutMax = time.Millisecond
		o.TLS = tlsCfg
	})
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			h.srv.serveConn(server, protocol, func() { server.Close() })
			close(done)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s session still running 10 s after the client left; input %q", protocol, data)
		}
	})
}

func FuzzIMAPSession(f *testing.F) {
	fuzzSession(f, IMAP, []string{
		"a CAPABILITY\r\nb NOOP\r\nc LOGOUT\r\n",
		"a LOGIN app apppw\r\nb NOOP\r\nc LOGOUT\r\n",
		"a LOGIN {3}\r\napp {5}\r\napppw\r\n",
		"a LOGIN {3+}\r\napp \"apppw\"\r\n",
		"a AUTHENTICATE PLAIN AGFwcABhcHBwdw==\r\nb NOOP\r\n",
		"a AUTHENTICATE PLAIN\r\nAGFwcABhcHBwdw==\r\n",
		"a AUTHENTICATE PLAIN\r\n*\r\n",
		"a STARTTLS\r\nb LOGIN app apppw\r\n",
		"a LOGIN app wrong\r\nb LOGIN app wrong\r\nc LOGIN app wrong\r\n",
		"a LOGIN \"a\\\"pp\" \"x\\\\y\"\r\n",
		"a ID (\"name\" \"x\")\r\n",
		"\r\n\r\n* BAD\r\n",
		"a LOGIN {99999999999}\r\n",
		"a LOGIN app apppw\r\nb APPEND INBOX {5}\r\nhello\r\n",
	})
}

func FuzzPOP3Session(f *testing.F) {
	fuzzSession(f, POP3, []string{
		"CAPA\r\nUSER app\r\nPASS apppw\r\nSTAT\r\nQUIT\r\n",
		"AUTH PLAIN AGFwcABhcHBwdw==\r\nLIST\r\n",
		"AUTH PLAIN\r\nAGFwcABhcHBwdw==\r\n",
		"AUTH\r\nAUTH PLAIN\r\n*\r\n",
		"STLS\r\nUSER app\r\n",
		"PASS apppw\r\nUSER\r\n",
		"USER app\r\nPASS wrong\r\nUSER app\r\nPASS wrong\r\n",
		"\x00\xff\r\nQUIT\r\n",
	})
}
