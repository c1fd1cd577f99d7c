package fakegoogle

import (
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
)

// sessionID stands in for the per-session id Gmail puts before "- gsmtp"
// (e.g. "d2e1a72fcca58-81fa12913cesm10275683b3a.48"); the fake uses one
// fixed value so tests can compare whole replies.
const sessionID = "a1b2c3d4e5f60-fake0000sm0000000.1"

// gsmtp is the tail of every Gmail reply line that ends a reply.
const gsmtp = sessionID + " - gsmtp"

// Gmail's replies on smtp.gmail.com:587 (doc.go says where each was seen).
// Each is written as a go-smtp client reports it: Message holds the text
// of every line joined by "\n", without the enhanced code Gmail repeats at
// the start of each line (the server puts it back, see wire).
var (
	// ReplyBadCredentials ends every failed AUTH, XOAUTH2 included.
	ReplyBadCredentials = gmailReply(535, 5, 7, 8,
		"Username and Password not accepted. For more information, go to",
		" https://support.google.com/mail/?p=BadCredentials "+gsmtp)
	// ReplyAuthRequired answers MAIL before a successful AUTH.
	ReplyAuthRequired = gmailReply(530, 5, 7, 0,
		"Authentication Required. For more information, go to",
		" https://support.google.com/mail/?p=WantAuthError "+gsmtp)
	// ReplyStartTLSFirst answers AUTH and MAIL before STARTTLS.
	ReplyStartTLSFirst = gmailReply(530, 5, 7, 0, "Must issue a STARTTLS command first. "+gsmtp)
	// ReplyTooManyLogins is Gmail's AUTH throttle.
	ReplyTooManyLogins = gmailReply(454, 4, 7, 0, "Too many login attempts, please try again later. "+gsmtp)
	// ReplyDailyLimit is the mailbox's daily sending limit (Workspace:
	// 2,000 messages a day, consumer Gmail 500), answered after DATA.
	ReplyDailyLimit = gmailReply(550, 5, 4, 5,
		"Daily user sending limit exceeded. For more information on Gmail",
		"sending limits go to",
		" https://support.google.com/a/answer/166852 "+gsmtp)
	// ReplyTryAgainLater is Gmail shedding load; the fake closes the
	// connection after sending it, as Gmail does.
	ReplyTryAgainLater = gmailReply(421, 4, 7, 0, "Try again later, closing connection. "+gsmtp)
	// ReplyTooManyRecipients answers the RCPT beyond Gmail's limit.
	ReplyTooManyRecipients = gmailReply(452, 4, 5, 3,
		"Your message has too many recipients. For more information regarding",
		"Google's sending limits, go to",
		" https://support.google.com/mail/?p=TooManyRecipientsError "+gsmtp)
	// ReplyMessageTooBig answers a message over Gmail's size limit.
	ReplyMessageTooBig = gmailReply(552, 5, 3, 4,
		"Your message exceeded Google's message size limits. For more information, go to",
		" https://support.google.com/mail/?p=MaxSizeError "+gsmtp)
	// ReplyNoSuchUser answers RCPT for a Gmail address that does not exist.
	ReplyNoSuchUser = gmailReply(550, 5, 1, 1,
		"The email account that you tried to reach does not exist. Please try",
		"double-checking the recipient's email address for typos or",
		"unnecessary spaces. For more information, go to",
		" https://support.google.com/mail/?p=NoSuchUser "+gsmtp)
)

func gmailReply(code, c, s, d int, lines ...string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{c, s, d}, Message: strings.Join(lines, "\n")}
}

// wire returns r as the server must hand it to go-smtp so that the lines
// go out as Gmail writes them: go-smtp puts the enhanced code only on the
// last line of a multi-line reply, Gmail (RFC 2034 section 4) on every
// line, so the fake writes it into the text of the others.
func wire(r *smtp.SMTPError) *smtp.SMTPError {
	lines := strings.Split(r.Message, "\n")
	if len(lines) == 1 || r.EnhancedCode == smtp.NoEnhancedCode || r.EnhancedCode == smtp.EnhancedCodeNotSet {
		return r
	}
	ec := fmt.Sprintf("%d.%d.%d ", r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2])
	for i := range lines[:len(lines)-1] {
		lines[i] = ec + lines[i]
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: r.EnhancedCode, Message: strings.Join(lines, "\n")}
}

// replyLines is r as Gmail writes it on the wire, one string per line.
func replyLines(r *smtp.SMTPError) []string {
	lines := strings.Split(r.Message, "\n")
	ec := fmt.Sprintf("%d.%d.%d", r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2])
	out := make([]string, len(lines))
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		out[i] = fmt.Sprintf("%d%s%s %s", r.Code, sep, ec, l)
	}
	return out
}
