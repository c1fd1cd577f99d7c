package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/spf13/cobra"
)

// Exit codes of sendmail(8) callers understand (sysexits.h).
const (
	exUsage       = 64 // EX_USAGE: bad flags
	exDataErr     = 65 // EX_DATAERR: the message or an address is unusable
	exUnavailable = 69 // EX_UNAVAILABLE: the relay refused it for good
	exTempFail    = 75 // EX_TEMPFAIL: try again later (relay down or 4xx)
)

// sendmailUsage is shown for `oauthrelay sendmail --help`.
const sendmailUsage = `usage: sendmail [-t] [-i|-oi] [-f sender] [-F "Full Name"] [-C config] [recipient ...] < message

Hands one message from standard input to the relay's SMTP listener
(listen.addr), for programs that call /usr/sbin/sendmail: cron, PHP mail(),
logwatch, mailx, git send-email. Install with:
  ln -s /usr/local/bin/oauthrelay /usr/sbin/sendmail

  -t        also send to the To:, Cc: and Bcc: addresses of the message (Bcc: is removed)
  -i, -oi   a line with a single "." does not end the message (read to the end)
  -f ADDR   envelope sender (default: the From: header's address)
  -F NAME   full name for a From: header added when the message has none
  -C FILE   oauthrelay configuration file (default: the usual search paths)
  -bm       deliver (the default); other Sendmail/Postfix options are accepted and ignored

Exit status: 0 accepted and queued by the relay; 75 the relay is not running
or answered 4xx (nothing was accepted: the caller keeps the message and may
try again); 69 the relay refused it (5xx); 65 unusable message or address;
64 bad usage.
`

// sendmailArgs is what a sendmail command line asks for.
type sendmailArgs struct {
	extract  bool // -t
	dotOK    bool // -i / -oi: a lone "." is text
	from     string
	fullName string
	config   string
	rcpts    []string
	help     bool
}

// parseSendmailArgs reads a Sendmail/Postfix command line. Options it does
// not use are accepted and ignored, as callers pass many (-oem, -odb, -v…).
func parseSendmailArgs(args []string) (sendmailArgs, error) {
	var a sendmailArgs
	value := func(i *int, flag, rest string) (string, error) {
		if rest != "" {
			return rest, nil
		}
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", flag)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			a.rcpts = append(a.rcpts, args[i+1:]...)
			return a, nil
		case arg == "--help" || arg == "-h":
			a.help = true
		case !strings.HasPrefix(arg, "-") || arg == "-":
			a.rcpts = append(a.rcpts, arg)
		case arg == "-t":
			a.extract = true
		case arg == "-i" || arg == "-oi":
			a.dotOK = true
		case strings.HasPrefix(arg, "-f") || strings.HasPrefix(arg, "-r"): // -r: old synonym
			v, err := value(&i, arg[:2], arg[2:])
			if err != nil {
				return a, err
			}
			a.from = strings.Trim(v, "<>")
		case strings.HasPrefix(arg, "-F"):
			v, err := value(&i, "-F", arg[2:])
			if err != nil {
				return a, err
			}
			a.fullName = v
		case strings.HasPrefix(arg, "-C"):
			v, err := value(&i, "-C", arg[2:])
			if err != nil {
				return a, err
			}
			a.config = v
		case arg == "-bm" || strings.HasPrefix(arg, "-o") || strings.HasPrefix(arg, "-B") ||
			strings.HasPrefix(arg, "-N") || strings.HasPrefix(arg, "-R") || strings.HasPrefix(arg, "-V") ||
			strings.HasPrefix(arg, "-X") || strings.HasPrefix(arg, "-L") || arg == "-v" || arg == "-U" ||
			arg == "-m" || arg == "-n" || arg == "-x" || arg == "-e" || strings.HasPrefix(arg, "-q"):
			// Accepted and ignored. Options that take a separate value
			// (-B type, -N dsn, -R ret, -V envid, -X log, -L label).
			if (arg == "-B" || arg == "-N" || arg == "-R" || arg == "-V" || arg == "-X" || arg == "-L") && i+1 < len(args) {
				i++
			}
		case strings.HasPrefix(arg, "-b"):
			return a, fmt.Errorf("%s: only -bm (deliver a message) is supported; the relay's queue is `oauthrelay queue list`", arg)
		default:
			// Unknown options are ignored, as Postfix's sendmail does.
		}
	}
	return a, nil
}

func newSendmailCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "sendmail [-t] [-i] [-f sender] [recipient ...] < message",
		Short:              "sendmail-compatible entry point for cron, PHP mail(), mailx… (also as /usr/sbin/sendmail)",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSendmail(args, os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

// runSendmail is `oauthrelay sendmail` and the binary called as sendmail.
func runSendmail(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a, err := parseSendmailArgs(args)
	if err != nil {
		return exitError{code: exUsage, err: fmt.Errorf("sendmail: %w\n%s", err, sendmailUsage)}
	}
	if a.help {
		fmt.Fprint(stdout, sendmailUsage)
		return nil
	}
	loaded, err := configs.Load(configs.LoadOptions{File: a.config})
	if err != nil && (loaded == nil || loaded.Listen.Addr == "") {
		return exitError{code: exTempFail, err: fmt.Errorf("sendmail: configuration: %w", err)}
	}
	msg, err := readSendmailMessage(bufio.NewReader(stdin), a)
	if err != nil {
		return exitError{code: exDataErr, err: fmt.Errorf("sendmail: %w", err)}
	}
	if len(msg.rcpts) == 0 {
		return exitError{code: exUsage, err: errors.New("sendmail: no recipients: name them as arguments, or use -t to take them from the To, Cc and Bcc fields")}
	}
	for _, ad := range append([]string{msg.from}, msg.rcpts...) {
		if strings.ContainsFunc(ad, func(r rune) bool { return r < ' ' || r == 0x7f || r == '<' || r == '>' }) {
			return exitError{code: exDataErr, err: fmt.Errorf("sendmail: address %q holds a control character or <>: not an address", ad)}
		}
	}
	if !strings.Contains(msg.from, "@") {
		return exitError{code: exDataErr, err: fmt.Errorf("sendmail: sender %q has no domain, so no account can send it: pass -f you@your-domain (cron: MAILFROM=…), or give the message a From: header", msg.from)}
	}
	reply, err := submit(loaded.Listen.Addr, msg)
	if err != nil {
		var se *smtp.SMTPError
		code := exTempFail
		switch {
		case errors.As(err, &se) && se.Code == 530:
			// listen.auth.required: the message is fine, the setup is
			// not; 75 keeps it with the caller rather than dropping it.
			return exitError{code: exTempFail, err: fmt.Errorf("sendmail: the relay requires AUTH (listen.auth.required: true) and sendmail does not authenticate: nothing was sent; let local programs send without AUTH (listen.auth.required: false; AUTH stays available) — %w", err)}
		case errors.As(err, &se) && se.Code >= 500:
			code = exUnavailable
		}
		return exitError{code: code, err: fmt.Errorf("sendmail: %w", err)}
	}
	_ = reply
	return nil
}

type sendmailMessage struct {
	from  string
	rcpts []string
	data  []byte // header and body, LF or CRLF line ends
}

// readSendmailMessage reads the message, completes its header (From:,
// Date:, Message-ID:, as sendmail does), takes recipients from it for -t
// and removes Bcc:.
func readSendmailMessage(r *bufio.Reader, a sendmailArgs) (*sendmailMessage, error) {
	var raw bytes.Buffer
	for {
		line, err := r.ReadBytes('\n')
		if !a.dotOK && (string(line) == ".\n" || string(line) == ".\r\n" || (err == io.EOF && string(line) == ".")) {
			break
		}
		raw.Write(line)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if raw.Len() > 150<<20 {
			return nil, errors.New("message larger than 150 MB")
		}
	}
	head, body := splitHeader(raw.Bytes())
	hdr, err := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(head), strings.NewReader("\r\n")))).ReadMIMEHeader()
	if err != nil && len(head) > 0 {
		return nil, fmt.Errorf("the message's header cannot be read: %v", err)
	}
	m := &sendmailMessage{rcpts: a.rcpts}
	if a.extract {
		for _, k := range []string{"To", "Cc", "Bcc"} {
			for _, v := range hdr.Values(k) {
				list, err := mail.ParseAddressList(v)
				if err != nil {
					return nil, fmt.Errorf("%s: %q: %v", k, v, err)
				}
				for _, ad := range list {
					m.rcpts = append(m.rcpts, ad.Address)
				}
			}
		}
	}
	m.from = a.from
	if m.from == "" {
		if v := hdr.Get("From"); v != "" {
			if ad, err := mail.ParseAddress(v); err == nil {
				m.from = ad.Address
			}
		}
	}
	if m.from == "" {
		m.from = localSender()
	}
	var out bytes.Buffer
	if hdr.Get("From") == "" {
		from := (&mail.Address{Name: a.fullName, Address: m.from}).String()
		fmt.Fprintf(&out, "From: %s\r\n", from)
	}
	if hdr.Get("Date") == "" {
		fmt.Fprintf(&out, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	}
	if hdr.Get("Message-Id") == "" {
		host, _ := os.Hostname()
		fmt.Fprintf(&out, "Message-ID: <%d.%d.oauthrelay-sendmail@%s>\r\n", time.Now().UnixNano(), os.Getpid(), host)
	}
	out.Write(dropHeader(head, "Bcc"))
	out.WriteString("\r\n")
	out.Write(body)
	m.data = out.Bytes()
	return m, nil
}

// splitHeader splits a message at its first empty line. Text that does not
// start with a header field is all body (`echo hello | sendmail bob@…`).
func splitHeader(data []byte) (head, body []byte) {
	if !looksLikeHeader(data) {
		return nil, data
	}
	for off := 0; off < len(data); {
		j := bytes.IndexByte(data[off:], '\n')
		if j < 0 {
			break
		}
		if len(bytes.TrimRight(data[off:off+j+1], "\r\n")) == 0 {
			return data[:off], data[off+j+1:]
		}
		off += j + 1
	}
	return data, nil
}

// looksLikeHeader: the text starts with a "Name: value" line.
func looksLikeHeader(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// dropHeader removes every field named name (and its folded lines).
func dropHeader(head []byte, name string) []byte {
	var out bytes.Buffer
	skipping := false
	for _, line := range bytes.SplitAfter(head, []byte("\n")) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if !skipping {
				out.Write(line)
			}
			continue
		}
		field, _, _ := bytes.Cut(line, []byte(":"))
		skipping = strings.EqualFold(strings.TrimSpace(string(field)), name)
		if !skipping {
			out.Write(line)
		}
	}
	return out.Bytes()
}

func localSender() string {
	name := "root"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return name
}

// submit hands the message to the listener; an error is the relay's
// reply (*smtp.SMTPError) or a connection problem.
func submit(addr string, m *sendmailMessage) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("the relay is not reachable at %s (%v): nothing was sent; start it (systemctl start oauthrelay) and try again", addr, err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Minute))
	c := smtp.NewClient(conn)
	defer c.Close()
	host, _ := os.Hostname()
	if err := c.Hello(host); err != nil {
		return "", err
	}
	if err := c.Mail(m.from, nil); err != nil {
		return "", err
	}
	for _, r := range m.rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", fmt.Errorf("recipient %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(m.data); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return resp.StatusText, nil
}
