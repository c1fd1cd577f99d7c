package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/spf13/cobra"
)

func newSendCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "send --from ADDR --to ADDR [--subject S] [FILE|-]",
		Short: "Send a test message to the local listener (smoke test)",
		Long: `send hands one message to the relay's SMTP listener (listen.addr) and prints
the relay's answer, such as "250 2.0.0 OK queued as 01a2…". With FILE (or -
for standard input) its bytes are sent as they are; text piped in without a
FILE (echo hello | oauthrelay send …) is sent as the message if it starts
with a header, else as the body of a composed one; otherwise a short test
message is composed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			from, _ := cmd.Flags().GetString("from")
			to, _ := cmd.Flags().GetStringSlice("to")
			subject, _ := cmd.Flags().GetString("subject")
			server, _ := cmd.Flags().GetString("server")
			if from == "" || len(to) == 0 {
				return exitError{code: 2, err: errors.New("--from and --to are required")}
			}
			for _, v := range append([]string{from, subject}, to...) {
				if strings.ContainsAny(v, "\r\n\x00") {
					return exitError{code: 2, err: fmt.Errorf("%q holds a line break or NUL: --from, --to and --subject are one line each", v)}
				}
			}
			if server == "" {
				loaded, err := mustLoad(func() (*configs.Loaded, error) { return loadConfig(cmd) })
				if err != nil {
					return err
				}
				server = loaded.Listen.Addr
			}
			var body io.Reader
			switch {
			case len(args) == 1 && args[0] == "-":
				body = os.Stdin
			case len(args) == 1:
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				body = f
			case stdinPiped():
				// `echo text | oauthrelay send …`: the text is the message,
				// or its body if it has no header.
				data, err := io.ReadAll(io.LimitReader(os.Stdin, 150<<20))
				if err != nil {
					return err
				}
				if head, _ := splitHeader(data); head != nil {
					body = bytes.NewReader(data)
				} else {
					host, _ := os.Hostname()
					body = bytes.NewReader(append(testHeader(from, to, subject, host), data...))
				}
			default:
				host, _ := os.Hostname()
				body = bytes.NewReader(testMessage(from, to, subject, host))
			}
			reply, err := sendTo(server, from, to, body)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), reply)
			return nil
		},
	}
	cmd.Flags().String("from", "", "envelope sender and From: header")
	cmd.Flags().StringSlice("to", nil, "recipient (repeat or comma-separate)")
	cmd.Flags().String("subject", "oauthrelay test message", "subject of the composed message")
	cmd.Flags().String("server", "", "SMTP address to send to (default: listen.addr)")
	return cmd
}

// stdinPiped: standard input is a pipe or a file, not a terminal (nor
// /dev/null).
func stdinPiped() bool {
	info, err := os.Stdin.Stat()
	return err == nil && info.Mode()&(os.ModeNamedPipe) != 0 || err == nil && info.Mode().IsRegular() && info.Size() > 0
}

func testHeader(from string, to []string, subject, host string) []byte {
	now := time.Now()
	return fmt.Appendf(nil, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d.oauthrelay-send@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		from, strings.Join(to, ", "), subject, now.Format(time.RFC1123Z), now.UnixNano(), host)
}

func testMessage(from string, to []string, subject, host string) []byte {
	return fmt.Appendf(testHeader(from, to, subject, host), "This is a test message sent with `oauthrelay send` from %s at %s.\r\n", host, time.Now().Format(time.RFC1123))
}

// sendTo delivers one message over plain SMTP and returns the final reply.
func sendTo(addr, from string, to []string, body io.Reader) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("cannot reach the relay at %s: %w (is `oauthrelay serve` running?)", addr, err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("oauthrelay-send"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, t := range to {
		if err := c.Rcpt(t, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return "250 " + resp.StatusText, nil
}
