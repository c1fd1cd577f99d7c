package fakem365

import (
	"strconv"
	"strings"
	"testing"
)

// pop3 is a small POP3 client over lineConn.
type pop3 struct{ *lineConn }

func dialPOP3(t *testing.T, m *M365) pop3 {
	t.Helper()
	p := pop3{dialLines(t, m, m.POP3.Addr)}
	if g := p.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return p
}

func (p pop3) cmd(line string) string {
	p.t.Helper()
	p.send(line)
	return p.line()
}

// multi reads a multi-line response's body, undoing dot-stuffing.
func (p pop3) multi() string {
	p.t.Helper()
	var b strings.Builder
	for {
		s := p.line()
		if s == "." {
			return b.String()
		}
		b.WriteString(strings.TrimPrefix(s, ".") + "\r\n")
	}
}

func (p pop3) login(t *testing.T, token string) {
	t.Helper()
	if got := p.cmd("AUTH XOAUTH2 " + xoauth2B64(mailbox, token)); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("AUTH: %q", got)
	}
}

func TestPOP3_RetrByteExactAndDeleAtQuit(t *testing.T) {
	m := start(t)
	body := "Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
	sendToSelf(t, m, body)
	m.Deliver(mailbox, []byte("Subject: second\r\n\r\nx\r\n"))
	p := dialPOP3(t, m)
	if got := p.cmd("CAPA"); got != "+OK" {
		t.Fatalf("CAPA: %q", got)
	}
	if capa := p.multi(); !strings.Contains(capa, "SASL PLAIN XOAUTH2\r\n") || !strings.Contains(capa, "UIDL\r\n") {
		t.Errorf("CAPA lists %q", capa)
	}
	p.login(t, tokenWith(t, m, scopePOP))
	if open, _ := m.POP3.Connections(mailbox); open != 1 {
		t.Errorf("open connections = %d", open)
	}
	if got := p.cmd("STAT"); got != "+OK 2 "+strconv.Itoa(len(body)+len("Subject: second\r\n\r\nx\r\n")) {
		t.Errorf("STAT: %q", got)
	}
	if got := p.cmd("LIST 1"); got != "+OK 1 "+strconv.Itoa(len(body)) {
		t.Errorf("LIST 1: %q", got)
	}
	p.cmd("UIDL")
	uidl := p.multi()
	if lines := strings.Split(strings.TrimSpace(uidl), "\r\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "1 ") {
		t.Errorf("UIDL %q", uidl)
	}
	if got := p.cmd("RETR 1"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("RETR: %q", got)
	}
	if got := p.multi(); got != body {
		t.Errorf("RETR = %q, want %q", got, body)
	}
	if got := p.cmd("DELE 1"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("DELE: %q", got)
	}
	if got := p.cmd("RETR 1"); !strings.HasPrefix(got, "-ERR") {
		t.Errorf("RETR of a deleted message: %q", got)
	}
	if got := p.cmd("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
		t.Errorf("STAT after DELE: %q", got)
	}
	if n := len(m.Mail.Messages(mailbox)); n != 2 {
		t.Errorf("DELE applied before QUIT: %d left", n)
	}
	if got := p.cmd("NOOP"); got != "+OK" {
		t.Errorf("NOOP: %q", got)
	}
	if got := p.cmd("QUIT"); !strings.HasPrefix(got, "+OK") {
		t.Errorf("QUIT: %q", got)
	}
	if got := m.Mail.Messages(mailbox); len(got) != 1 || !strings.Contains(string(got[0]), "second") {
		t.Errorf("after QUIT the INBOX holds %q", got)
	}
	eventually(t, "the connection counted closed", func() bool { open, _ := m.POP3.Connections(mailbox); return open == 0 })
}

func TestPOP3_RsetAndDroppedConnectionDeleteNothing(t *testing.T) {
	m := start(t)
	m.Deliver(mailbox, []byte("Subject: a\r\n\r\nb\r\n"))
	tok := tokenWith(t, m, scopePOP)

	p := dialPOP3(t, m)
	p.login(t, tok)
	p.cmd("DELE 1")
	if got := p.cmd("RSET"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("RSET: %q", got)
	}
	p.cmd("QUIT")

	p = dialPOP3(t, m)
	p.login(t, tok)
	p.cmd("DELE 1")
	p.c.Close() // no QUIT: RFC 1939 6, nothing is removed
	eventually(t, "the dropped connection counted closed", func() bool { open, _ := m.POP3.Connections(mailbox); return open == 0 })
	if n := len(m.Mail.Messages(mailbox)); n != 1 {
		t.Errorf("INBOX holds %d, want 1", n)
	}
}

// TestPOP3_ExchangeRepliesWordForWord: only XOAUTH2 with
// POP.AccessAsUser.All for the user= mailbox signs in, with or without an
// initial response; every refusal is Exchange's text.
func TestPOP3_ExchangeRepliesWordForWord(t *testing.T) {
	m := start(t)
	const refused = "-ERR Authentication failure: unknown user name or bad password."
	imapOnly := tokenWith(t, m, scopeIMAP)
	good := tokenWith(t, m, scopePOP)
	p := dialPOP3(t, m)
	if got := p.cmd("STAT"); !strings.HasPrefix(got, "-ERR") {
		t.Errorf("STAT before AUTH: %q", got)
	}
	p.cmd("USER " + mailbox)
	if got := p.cmd("PASS secret"); got != refused {
		t.Errorf("PASS: %q", got)
	}
	if got := p.cmd("AUTH XOAUTH2 " + xoauth2B64(mailbox, imapOnly)); got != refused {
		t.Errorf("token without POP.AccessAsUser.All: %q", got)
	}
	if got := p.cmd("AUTH XOAUTH2 " + xoauth2B64("ceo@contoso.test", good)); got != refused {
		t.Errorf("other mailbox: %q", got)
	}
	if got := p.cmd("AUTH XOAUTH2"); got != "+ " {
		t.Fatalf("continuation %q", got)
	}
	if got := p.cmd(xoauth2B64(mailbox, good)); got != "+OK User successfully authenticated." {
		t.Errorf("AUTH after +: %q", got)
	}
	if got := p.cmd("STAT"); got != "+OK 0 0" {
		t.Errorf("empty INBOX STAT: %q", got)
	}
}

func TestPOP3_AppOnlyNeedsPOPAccessAsApp(t *testing.T) {
	m := start(t)
	app := appToken(t, m)
	m.Entra.SetAppRoles("SMTP.SendAsApp", "IMAP.AccessAsApp")
	appNoPOP := appToken(t, m)
	p := dialPOP3(t, m)
	if got := p.cmd("AUTH XOAUTH2 " + xoauth2B64(mailbox, appNoPOP)); !strings.HasPrefix(got, "-ERR") {
		t.Errorf("app token without POP.AccessAsApp: %q", got)
	}
	if got := p.cmd("AUTH XOAUTH2 " + xoauth2B64(mailbox, app)); !strings.HasPrefix(got, "+OK") {
		t.Errorf("app token with POP.AccessAsApp: %q", got)
	}
}
