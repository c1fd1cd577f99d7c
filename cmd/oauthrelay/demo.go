package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a relay against a built-in fake Microsoft 365 and send one message through it",
		Long: `demo starts a fake Microsoft 365 (Entra ID and SMTP submission, on 127.0.0.1)
and a relay in a temporary folder, connects an account through the relay's
Connect page, sends one message to the relay with a real SMTP client, and
follows it until the fake Microsoft 365 holds it. Nothing leaves this
machine. --keep leaves both running to try by hand.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keep, _ := cmd.Flags().GetBool("keep")
			verbose, _ := cmd.Flags().GetBool("verbose")
			return runDemo(cmd.Context(), cmd.OutOrStdout(), keep, verbose)
		},
	}
	cmd.Flags().Bool("keep", false, "leave the fake and the relay running (Ctrl-C stops)")
	cmd.Flags().Bool("verbose", false, "show the relay's log")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, keep, verbose bool) error {
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }

	fake, err := fakem365.Start()
	if err != nil {
		return err
	}
	defer fake.Close()
	dir, err := os.MkdirTemp("", "oauthrelay-demo-")
	if err != nil {
		return err
	}
	// Removed however the demo ends: an error, Ctrl-C or SIGTERM with
	// --keep (the relay is stopped first, below, by its own defer).
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "fake-m365-ca.pem")
	if err := fake.WriteCA(caFile); err != nil {
		return err
	}
	step("fake Microsoft 365: Entra ID at %s, SMTP submission at %s (STARTTLS, XOAUTH2)", fake.Entra.URL, fake.SMTP.Addr)

	smtpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c := configs.Default()
	c.Listen.Addr, c.Admin.Addr = smtpLn.Addr().String(), adminLn.Addr().String()
	c.Listen.Hostname, c.Upstream.Hostname = "oauthrelay-demo", "oauthrelay-demo"
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Keysafe.Path = filepath.Join(dir, "keysafe.bin")
	c.Upstream.Addr, c.Upstream.CAFile = fake.SMTP.Addr, caFile
	c.Accounts = []configs.Account{{
		Name: "demo", Tenant: "contoso.test", ClientID: "demo-client", Flow: configs.FlowAuthorizationCode,
		Mailbox: "helpdesk@contoso.test", Senders: []string{"*@contoso.test"}, Authority: fake.Entra.URL,
	}}
	configs.AccountDefaults(&c.Accounts[0])
	if ps := configs.Validate(&c); len(ps) > 0 {
		return ps
	}
	logLevel := "error"
	if verbose {
		logLevel = "debug"
	}
	log := newLogger(configs.Log{Level: logLevel, Format: "text"}, os.Stderr)

	delivered := make(chan string, 1)
	r, err := daemon.New(&c, log, daemon.Hooks{Upstream: relay.UpstreamEvents{
		Delivered: func(id, account string, reply queue.Reply, since time.Duration, _ bool) {
			select { // the demo's own message; with --keep, more may follow: never block delivery
			case delivered <- fmt.Sprintf("%s (%s after it was accepted)", reply, since.Round(time.Millisecond)):
			default:
			}
		},
	}})
	if err != nil {
		return err
	}
	r.StartWith(smtpLn, adminLn)
	step("relay: SMTP on %s, admin on http://%s, spool in %s", r.SMTPAddr(), r.AdminAddr(), c.Spool.Dir)
	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Shutdown(sctx)
	}
	defer shutdown()

	// Connect the account the way an admin does: open the Connect page,
	// sign in at (fake) Microsoft, come back to the callback.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.PostForm("http://"+r.AdminAddr()+"/login", url.Values{"token": {r.AdminToken}})
	if err != nil {
		return fmt.Errorf("admin login: %w", err)
	}
	resp.Body.Close()
	resp, err = browser.Get("http://" + r.AdminAddr() + "/connect/demo")
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`Connected as [^<]*flows now\.`).Find(page)
	if resp.StatusCode != 200 || m == nil {
		return fmt.Errorf("connect failed (%d): %s", resp.StatusCode, page)
	}
	step("account demo connected (authorization code + PKCE at the fake Entra ID): %s", m)

	from, to := "alerts@contoso.test", "someone@example.com"
	fake.SMTP.SetSendAsCheck(false) // alerts@ sends through helpdesk@, as with Send As rights
	reply, err := sendTo(r.SMTPAddr(), from, []string{to}, strings.NewReader(string(testMessage(from, []string{to}, "Hello from oauthrelay demo", "demo"))))
	if err != nil {
		return fmt.Errorf("sending to the relay: %w", err)
	}
	step("message from %s to %s accepted by the relay: %s", from, to, reply)

	select {
	case d := <-delivered:
		st := r.Tokens.State("demo")
		step("access token obtained for %s: %s, valid until %s", st.Mailbox, st.Fingerprint, st.AccessExpiry.Format("15:04:05"))
		step("delivered upstream over STARTTLS + XOAUTH2; Microsoft 365 (fake) answered: %s", d)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the message did not reach the fake Microsoft 365 within 30 s; run with --verbose")
	}
	msgs := fake.SMTP.Messages()
	if len(msgs) != 1 {
		return fmt.Errorf("the fake Microsoft 365 holds %d messages, want 1", len(msgs))
	}
	step("the fake Microsoft 365 holds it: MAIL FROM <%s>, RCPT TO <%s>, %d bytes, signed in as %s", msgs[0].From, msgs[0].To[0], len(msgs[0].Data), msgs[0].Mailbox)
	if !keep {
		fmt.Fprintln(out, "demo OK")
		return nil
	}
	fmt.Fprintf(out, "\nBoth keep running. Try:\n  swaks --server %s --from you@contoso.test --to someone@example.com\n", r.SMTPAddr())
	fmt.Fprintf(out, "  go run ./cmd/oauthrelay send --server %s --from you@contoso.test --to someone@example.com\n", r.SMTPAddr())
	fmt.Fprintf(out, "Status page: http://%s/ (admin token: %s)   spool: %s\nCtrl-C stops (and removes %s).\n", r.AdminAddr(), r.AdminToken, c.Spool.Dir, dir)
	<-ctx.Done()
	fmt.Fprintln(out, "stopping; removing", dir)
	return nil
}
