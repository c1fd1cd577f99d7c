package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oauthrelay/oauthrelay/queue"
)

// Bouncer sends RFC 3464 delivery status notifications for failed
// recipients, through the same account, to the original sender. It is the
// queue's bounce hook; the queue never calls it for the null sender or for
// a bounce.
type Bouncer struct {
	Queue    Enqueuer
	Hostname string
	// RemoteMTA names an account's upstream in the DSN's Remote-MTA
	// field (nil: none).
	RemoteMTA func(account string) string
	// Service names an account's provider in the text ("Microsoft 365"
	// when nil, "Gmail").
	Service func(account string) string
	// Mailbox returns the account's mailbox (the DSN's envelope sender:
	// Microsoft 365 does not accept <>).
	Mailbox func(account string) string
	Log     *slog.Logger
	// Sent, if set, is called for every bounce queued.
	Sent func(account string)
}

// Bounce implements queue.BounceFunc.
func (b *Bouncer) Bounce(ctx context.Context, bo *queue.Bounce) error {
	mailbox := b.Mailbox(bo.Meta.Account)
	if mailbox == "" {
		return fmt.Errorf("account %s is not configured; cannot send the bounce", bo.Meta.Account)
	}
	// The listener checked the sender, but a message queued before it did
	// (or a damaged record) may hold anything: never mail that.
	to, err := ParseAddress(bo.Meta.From, true)
	if err != nil {
		return fmt.Errorf("the sender %s is not a valid address (%v); no bounce sent", visible(bo.Meta.From), err)
	}
	headers := originalHeaders(bo.Open)
	var remote string
	if b.RemoteMTA != nil {
		remote = b.RemoteMTA(bo.Meta.Account)
	}
	service := "Microsoft 365"
	if b.Service != nil {
		service = b.Service(bo.Meta.Account)
	}
	msg := buildDSN(b.Hostname, remote, service, mailbox, bo.Meta, bo.Failed, headers, time.Now())
	id, err := b.Queue.Enqueue(ctx, queue.Envelope{
		From: mailbox, To: []string{to.String()}, Account: bo.Meta.Account,
		IsBounce: true, EightBit: true, SMTPUTF8: !to.IsASCII(),
	}, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	if b.Sent != nil {
		b.Sent(bo.Meta.Account)
	}
	b.Log.Info("bounce queued", "id", id, "for", bo.Meta.ID, "to", bo.Meta.From, "failed_recipients", len(bo.Failed))
	return nil
}

// originalHeaders returns the header block of the original message (at
// most 64 KiB), as CRLF text fit for the DSN: no NUL or lone CR, no line
// over 998 octets (RFC 5322 2.1.1).
func originalHeaders(open func() (io.ReadCloser, error)) []byte {
	if open == nil {
		return nil
	}
	rc, err := open()
	if err != nil {
		return nil
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, 64<<10))
	var h bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" {
			break
		}
		line = strings.Map(func(r rune) rune {
			if r == 0 || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, line)
		if len(line) > 998 {
			line = strings.ToValidUTF8(line[:998], "")
		}
		h.WriteString(line + "\r\n")
		if err != nil {
			break
		}
	}
	return h.Bytes()
}

// dsnStatus is the Status field: the enhanced code, or one made from the
// reply code (RFC 3464 2.3.4).
func dsnStatus(r queue.Reply) string {
	if enhancedCode.MatchString(r.Enhanced) {
		return r.Enhanced
	}
	class := r.Code / 100
	if class != 4 && class != 5 {
		class = 5
	}
	return fmt.Sprintf("%d.0.0", class)
}

var enhancedCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// dsnAddr is an envelope address as the DSN shows it: written back by
// Address.String when it parses, else stripped of anything that could
// break a line (it was never checked: queued before the listener did).
func dsnAddr(s string) string {
	if a, err := ParseAddress(s, true); err == nil {
		return a.String()
	}
	s = strings.Map(func(r rune) rune {
		if r < 32 || r == 127 || r == utf8.RuneError || !unicode.IsGraphic(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > maxPath {
		s = strings.ToValidUTF8(s[:maxPath], "") + "…"
	}
	return s
}

// dsnRecipient is the Final-Recipient value: rfc822 for an ASCII address,
// utf-8 in RFC 6533's utf-8-addr-xtext otherwise.
func dsnRecipient(addr string) string {
	if isASCII(addr) {
		return "rfc822; " + addr
	}
	var b strings.Builder
	for _, r := range addr {
		if r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "\\x{%X}", r)
		}
	}
	return "utf-8; " + b.String()
}

func buildDSN(hostname, remoteMTA, service, mailbox string, m *queue.Meta, failed []queue.Recipient, headers []byte, now time.Time) []byte {
	rnd := make([]byte, 12)
	rand.Read(rnd)
	boundary := "oauthrelay-" + hex.EncodeToString(rnd)
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("From: Mail Delivery System <%s>\r\n", mailbox)
	sender := dsnAddr(m.From)
	w("To: <%s>\r\n", sender)
	w("Subject: Undelivered Mail Returned to Sender\r\n")
	w("Date: %s\r\n", now.Format(time.RFC1123Z))
	w("Message-ID: <dsn.%s.%s@%s>\r\n", m.ID, hex.EncodeToString(rnd[:4]), hostname)
	w("Auto-Submitted: auto-replied\r\n") // RFC 3834: never answered automatically
	w("MIME-Version: 1.0\r\n")
	w("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	w("This is a MIME-encapsulated message.\r\n\r\n")

	w("--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n", boundary)
	w("This is oauthrelay at %s, sending mail through %s as %s.\r\n\r\n", hostname, service, mailbox)
	w("Your message of %s could not be delivered to %d recipient(s).\r\n", m.Arrived.Format(time.RFC1123Z), len(failed))
	w("It was not delivered to them and will not be retried.\r\n\r\n")
	for _, r := range failed {
		reply := queue.Reply{Code: 554, Text: "failed"}
		if r.Last != nil {
			reply = *r.Last
		}
		w("<%s>\r\n", dsnAddr(r.Addr))
		w("    %s answered: %s\r\n", service, oneLine(reply.String()))
		w("    What it means: %s\r\n\r\n", oneLine(ExplainReplyFrom(service, reply, mailbox, sender)))
	}

	w("--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	w("Reporting-MTA: dns; %s\r\n", hostname)
	w("X-Oauthrelay-Queue-ID: %s\r\n", m.ID)
	w("Arrival-Date: %s\r\n", m.Arrived.Format(time.RFC1123Z))
	for _, r := range failed {
		reply := queue.Reply{Code: 554, Text: "failed"}
		if r.Last != nil {
			reply = *r.Last
		}
		w("\r\nFinal-Recipient: %s\r\n", dsnRecipient(dsnAddr(r.Addr)))
		w("Action: failed\r\n")
		w("Status: %s\r\n", dsnStatus(reply))
		// Only for a reply the upstream gave, not one we made (max age 4.4.7).
		if r.Last != nil && r.Last.Enhanced != "4.4.7" && remoteMTA != "" {
			w("Remote-MTA: dns; %s\r\n", remoteMTA)
		}
		w("Diagnostic-Code: smtp; %s\r\n", oneLine(reply.String()))
		if !m.LastAttempt.IsZero() {
			w("Last-Attempt-Date: %s\r\n", m.LastAttempt.Format(time.RFC1123Z))
		}
	}
	w("\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
	b.Write(headers)
	w("\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// oneLine makes s one printable line of at most 900 octets: runs of white
// space (CR and LF among them) become one space, other controls go.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 32 && r != '\t' && r != '\r' && r != '\n' || r == 127 || r == utf8.RuneError {
			return -1
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 900 {
		s = strings.ToValidUTF8(s[:900], "")
	}
	return s
}

// ExplainReply says what a Microsoft 365 reply means for the sender or admin.
func ExplainReply(r queue.Reply, mailbox, sender string) string {
	return ExplainReplyFrom("Microsoft 365", r, mailbox, sender)
}

// ExplainReplyFrom says what a reply of service ("Microsoft 365",
// "Gmail") means for the sender or admin.
func ExplainReplyFrom(service string, r queue.Reply, mailbox, sender string) string {
	if service == "Gmail" {
		if s := explainGmail(r); s != "" {
			return s
		}
	}
	switch {
	case r.Enhanced == "5.2.252":
		return fmt.Sprintf("the mailbox %s may not send as %s. An Exchange admin grants it Send As on that address (Add-RecipientPermission), or the relay's account sets rewrite_sender: envelope (or from).", mailbox, sender)
	case r.Enhanced == "5.3.4" || r.Code == 552:
		return "the message is larger than Microsoft 365 accepts for this mailbox (35 MB by default, after encoding). Send smaller attachments or a link."
	case r.Enhanced == "4.4.7":
		return "the relay kept trying for the whole retry period without success; the reason is in the reply above."
	case strings.HasPrefix(r.Enhanced, "5.1."):
		return "Microsoft 365 does not accept this recipient address: check it for typos."
	case r.Enhanced == "5.2.251", r.Enhanced == "5.2.253", r.Enhanced == "5.2.254", r.Enhanced == "5.2.255":
		return "Microsoft 365 is throttling the mailbox after too many errors; an admin should check the mailbox's sending limits and errors."
	case strings.HasPrefix(r.Enhanced, "5.7.70"), strings.HasPrefix(r.Enhanced, "5.7.75"):
		return "Microsoft 365 blocked sending from this tenant or mailbox (suspected spam or a restricted account); an admin must check the Microsoft 365 Defender portal."
	case r.Enhanced == "5.7.57":
		return "Microsoft 365 did not accept the relay's sign-in for this message."
	case strings.HasPrefix(r.Enhanced, "5.7."):
		return "Microsoft 365 refused the message by policy; an Exchange admin can look it up by the code."
	case r.Code >= 500:
		return "Microsoft 365 refused the message permanently."
	}
	return "a temporary failure."
}

// explainGmail says what Gmail's own replies mean ("" for one read as
// any server's); https://support.google.com/a/answer/3726730 lists them.
func explainGmail(r queue.Reply) string {
	switch {
	case r.Code == 552 || r.Enhanced == "5.3.4":
		return "the message is larger than Gmail accepts (about 25 MB of attachments; 35 MB after encoding). Send smaller attachments or a Drive link."
	case r.Enhanced == "5.4.5":
		return "the mailbox reached Gmail's daily sending limit (2,000 messages a day for Google Workspace, 500 for gmail.com); the relay waits and sends the rest when the limit resets."
	case strings.HasPrefix(r.Enhanced, "5.1."):
		return "Gmail does not accept this recipient address: check it for typos."
	case r.Enhanced == "5.7.0" && r.Code == 530:
		return "Gmail did not accept the relay's sign-in for this message."
	case strings.HasPrefix(r.Enhanced, "5.7."):
		return "Gmail refused the message by policy (suspected spam, a blocked attachment type, or the sender's domain policy); the link in the reply says which."
	case r.Code >= 500:
		return "Gmail refused the message permanently."
	}
	return ""
}
