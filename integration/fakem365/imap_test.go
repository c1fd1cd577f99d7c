package fakem365

import (
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func dialIMAP(t *testing.T, m *M365, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialTLS(m.IMAP.Addr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: m.CA.Pool}, UnilateralDataHandler: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestIMAP_XOAUTH2WithScopeServesINBOXByteExact(t *testing.T) {
	m := start(t)
	body := "Subject: hi\r\nFrom: " + mailbox + "\r\n\r\n.leading dot\r\nline two\r\n"
	sendToSelf(t, m, body)
	c := dialIMAP(t, m, nil)
	if !c.Caps().Has("AUTH=XOAUTH2") || !c.Caps().Has(imap.CapSASLIR) {
		t.Fatalf("capabilities %v", c.Caps())
	}
	if err := c.Authenticate(xoauth2{mailbox, tokenWith(t, m, scopeIMAP)}); err != nil {
		t.Fatal(err)
	}
	if open, _ := m.IMAP.Connections(mailbox); open != 1 {
		t.Errorf("open connections = %d, want 1", open)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("select: %+v %v", sel, err)
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil || len(found.AllUIDs()) != 1 {
		t.Fatalf("uid search: %+v %v", found, err)
	}
	peek := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(found.AllUIDs()...), &imap.FetchOptions{
		UID: true, Flags: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{peek}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v %v", msgs, err)
	}
	if got := string(msgs[0].FindBodySection(peek)); got != body {
		t.Errorf("BODY.PEEK[] = %q, want %q", got, body)
	}
	if msgs[0].RFC822Size != int64(len(body)) || len(msgs[0].Flags) != 0 {
		t.Errorf("size %d flags %v", msgs[0].RFC822Size, msgs[0].Flags)
	}
	// BODY[] (not peek) sets \Seen.
	msgs, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})) != body {
		t.Fatalf("fetch BODY[]: %v", err)
	}
	if flags, _ := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect(); len(flags) != 1 || !hasFlag(flags[0].Flags, imap.FlagSeen) {
		t.Errorf("BODY[] did not set \\Seen: %+v", flags)
	}
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	if got := m.Mail.Messages(mailbox); len(got) != 0 {
		t.Errorf("after EXPUNGE the INBOX holds %d", len(got))
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the connection counted closed", func() bool { open, _ := m.IMAP.Connections(mailbox); return open == 0 })
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

func TestIMAP_RefusedWithoutTheRightGrant(t *testing.T) {
	m := start(t)
	smtpOnly := tokenWith(t, m, scopeSMTP)
	good := tokenWith(t, m, scopeIMAP)
	m.Entra.SetAccessTokenLifetime(-time.Second)
	expired := tokenWith(t, m, scopeIMAP)
	m.Entra.SetAccessTokenLifetime(time.Hour)
	m.Entra.SetAppRoles("SMTP.SendAsApp")
	appNoIMAP := appToken(t, m)
	tests := []struct{ name, user, token string }{
		{"no IMAP.AccessAsUser.All", mailbox, smtpOnly},
		{"other mailbox", "ceo@contoso.test", good},
		{"expired", mailbox, expired},
		{"not a token", mailbox, "nope"},
		{"app-only without IMAP.AccessAsApp", mailbox, appNoIMAP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dialIMAP(t, m, nil).Authenticate(xoauth2{tt.user, tt.token})
			if err == nil || !strings.Contains(err.Error(), "AUTHENTICATE failed.") {
				t.Fatalf("got %v, want NO AUTHENTICATE failed.", err)
			}
		})
	}
	if open, _ := m.IMAP.Connections(mailbox); open != 0 {
		t.Errorf("refused logins counted as open: %d", open)
	}
}

func TestIMAP_AppOnlyTokenOpensAnyMailbox(t *testing.T) {
	m := start(t)
	m.Deliver("shared@contoso.test", []byte("Subject: a\r\n\r\nb\r\n"))
	c := dialIMAP(t, m, nil)
	if err := c.Authenticate(xoauth2{"shared@contoso.test", appToken(t, m)}); err != nil {
		t.Fatal(err)
	}
	if sel, err := c.Select("INBOX", nil).Wait(); err != nil || sel.NumMessages != 1 {
		t.Fatalf("select: %+v %v", sel, err)
	}
}

// TestIMAP_ExchangeRepliesWordForWord checks the wire: AUTHENTICATE without
// SASL-IR gets an empty "+ " challenge, refusals read as Exchange's.
func TestIMAP_ExchangeRepliesWordForWord(t *testing.T) {
	m := start(t)
	body := "Subject: raw\r\n\r\n.dot\r\n"
	m.Deliver(mailbox, []byte(body))
	l := dialLines(t, m, m.IMAP.Addr)
	l.expect("* OK")
	l.send("a1 LOGIN " + mailbox + " password")
	if got := l.expect("a1 "); got != "a1 NO LOGIN failed." {
		t.Errorf("LOGIN: %q", got)
	}
	l.send("a2 AUTHENTICATE XOAUTH2")
	if got := l.line(); got != "+ " && got != "+" {
		t.Fatalf("challenge %q", got)
	}
	l.send(xoauth2B64(mailbox, "bad"))
	if got := l.expect("a2 "); got != "a2 NO AUTHENTICATE failed." {
		t.Errorf("bad token: %q", got)
	}
	l.send("a3 AUTHENTICATE PLAIN " + xoauth2B64("x", "y"))
	if got := l.expect("a3 "); got != "a3 NO AUTHENTICATE failed." {
		t.Errorf("PLAIN: %q", got)
	}
	l.send("a4 AUTHENTICATE XOAUTH2")
	l.line()
	l.send(xoauth2B64(mailbox, tokenWith(t, m, scopeIMAP)))
	if got := l.expect("a4 "); !strings.HasPrefix(got, "a4 OK") {
		t.Fatalf("good token without SASL-IR: %q", got)
	}
	l.send("a5 EXAMINE INBOX")
	l.expect("a5 OK")
	l.send("a6 UID FETCH 1:* (RFC822.SIZE RFC822)")
	head := l.expect("* 1 FETCH")
	if want := fmt.Sprintf("RFC822 {%d}", len(body)); !strings.Contains(head, want) {
		t.Fatalf("FETCH RFC822 answered %q, want %q", head, want)
	}
	got := make([]byte, len(body))
	if _, err := io.ReadFull(l.r, got); err != nil || string(got) != body {
		t.Errorf("RFC822 literal %q (%v), want %q", got, err, body)
	}
	if got := l.expect("a6 "); !strings.HasPrefix(got, "a6 OK") {
		t.Errorf("UID FETCH: %q", got)
	}
}

func TestIMAP_IdleSeesNewMessage(t *testing.T) {
	m := start(t)
	exists := make(chan uint32, 4)
	c := dialIMAP(t, m, &imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
		if d.NumMessages != nil {
			exists <- *d.NumMessages
		}
	}})
	if err := c.Authenticate(xoauth2{mailbox, tokenWith(t, m, scopeIMAP, scopePOP)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	// go-imap v2's server answers "+ idling" before its session starts
	// watching the mailbox; a message landing in between can go unreported
	// (seen once in CI runs). Give the watch a moment to start.
	time.Sleep(200 * time.Millisecond)
	sendToSelf(t, m, "Subject: new\r\n\r\nnew mail\r\n")
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS %d, want 1", n)
		}
	case <-time.After(20 * time.Second): // generous: sending goes through the fake's TLS SMTP, slow on a loaded machine
		t.Fatal("IDLE saw no EXISTS")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestIMAP_ExamineLeavesSeenAlone(t *testing.T) {
	m := start(t)
	m.Deliver(mailbox, []byte("Subject: a\r\n\r\nb\r\n"))
	c := dialIMAP(t, m, nil)
	if err := c.Authenticate(xoauth2{mailbox, tokenWith(t, m, scopeIMAP)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 || hasFlag(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("fetch after EXAMINE: %+v %v", msgs, err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect(); len(msgs) != 1 || hasFlag(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("\\Seen set by EXAMINE's FETCH: %+v", msgs)
	}
}
