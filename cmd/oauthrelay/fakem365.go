package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/spf13/cobra"
)

func newFakeM365Cmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fake-m365",
		Short: "Run a fake Microsoft 365 (Entra ID, SMTP, IMAP, POP3) on 127.0.0.1, to try oauthrelay without a tenant",
		Long: `fake-m365 runs a fake Entra ID (authorization code + PKCE, device code,
client credentials, refresh with rotation) and a fake Microsoft 365 SMTP
submission server (STARTTLS, XOAUTH2, Microsoft's replies) on this machine,
with implicit-TLS IMAP and POP3 servers (XOAUTH2 only) serving each
mailbox's INBOX: what the fake SMTP accepted for it. So a relay can be set
up and tried end to end without a tenant. Point an
account's authority and upstream.addr/ca_file at it (it prints the lines).
Each message it accepts is printed with its envelope. With --state DIR its
CA and the tokens it issued survive a restart.

A device code is approved by opening
  <entra>/device?code=<code>&upn=<mailbox>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entraAddr, _ := cmd.Flags().GetString("entra-addr")
			smtpAddr, _ := cmd.Flags().GetString("smtp-addr")
			imapAddr, _ := cmd.Flags().GetString("imap-addr")
			pop3Addr, _ := cmd.Flags().GetString("pop3-addr")
			state, _ := cmd.Flags().GetString("state")
			w := cmd.OutOrStdout()
			m, err := fakem365.StartWith(fakem365.Options{EntraAddr: entraAddr, SMTPAddr: smtpAddr, IMAPAddr: imapAddr, POP3Addr: pop3Addr, StateDir: state,
				OnMessage: func(msg fakem365.Message) {
					fmt.Fprintf(w, "accepted: MAIL FROM:<%s> RCPT TO:<%s> %d bytes, signed in as %s\n",
						msg.From, strings.Join(msg.To, ">,<"), len(msg.Data), msg.Mailbox)
				}})
			if err != nil {
				return err
			}
			defer m.Close()
			certs, _ := cmd.Flags().GetStringArray("client-certificate")
			for _, cc := range certs {
				clientID, file, ok := strings.Cut(cc, "=")
				if !ok || clientID == "" || file == "" {
					return fmt.Errorf("--client-certificate %q: want CLIENT_ID=FILE", cc)
				}
				cert, err := fakem365.ReadCertificate(file)
				if err != nil {
					return fmt.Errorf("--client-certificate %s: %w", cc, err)
				}
				m.Entra.RegisterCertificate(clientID, cert)
				fmt.Fprintf(w, "# certificate %s (%s) registered on app %s\n", file, cert.Subject, clientID)
			}
			caFile, _ := cmd.Flags().GetString("ca-out")
			if caFile == "" {
				caFile = filepath.Join(os.TempDir(), "fakem365-ca.pem")
				if state != "" {
					caFile = filepath.Join(state, "ca.pem")
				}
			}
			if err := m.WriteCA(caFile); err != nil {
				return err
			}
			fmt.Fprintf(w, "# fake Microsoft 365 running; in oauthrelay.yaml:\n")
			fmt.Fprintf(w, "upstream:\n  addr: %s\n  ca_file: %s\ninbound:   # for reading mail (IMAP/POP3, implicit TLS, XOAUTH2)\n  imap:\n    upstream: %s\n  pop3:\n    upstream: %s\naccounts:\n  - authority: %s   # on each account\n",
				m.SMTP.Addr, caFile, m.IMAP.Addr, m.POP3.Addr, m.Entra.URL)
			fmt.Fprintf(w, "# approve a device code: %s/device?code=<code>&upn=<mailbox>\n# Ctrl-C stops\n", m.Entra.URL)
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().String("entra-addr", "127.0.0.1:0", "address of the fake Entra ID (host:port; port 0 picks one)")
	cmd.Flags().String("smtp-addr", "127.0.0.1:0", "address of the fake SMTP submission server")
	cmd.Flags().String("imap-addr", "127.0.0.1:0", "address of the fake IMAP server (implicit TLS, like outlook.office365.com:993)")
	cmd.Flags().String("pop3-addr", "127.0.0.1:0", "address of the fake POP3 server (implicit TLS, like outlook.office365.com:995)")
	cmd.Flags().String("state", "", "folder that keeps the CA and issued tokens across restarts")
	cmd.Flags().StringArray("client-certificate", nil, "CLIENT_ID=FILE: register a PEM certificate on an app (Certificates & secrets), for accounts with client_certificate_file; repeatable")
	cmd.Flags().String("ca-out", "", "where to write the CA certificate (default: <state>/ca.pem, or the temp folder)")
	return cmd
}
