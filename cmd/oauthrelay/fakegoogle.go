package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/integration/fakegoogle"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/spf13/cobra"
)

func newFakeGoogleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fake-google",
		Short: "Run a fake Google (OAuth and smtp.gmail.com) on 127.0.0.1, to try a provider: google account without Google",
		Long: `fake-google runs a fake Google sign-in service (authorization code with
PKCE and the client secret, refresh, service accounts with domain-wide
delegation; Google's error shapes) and a fake smtp.gmail.com (STARTTLS,
XOAUTH2, Gmail's replies) on this machine, on random ports. It prints the
configuration lines for an account. Each message it accepts is printed.

  --client ID=SECRET         an OAuth client (any redirect URI on 127.0.0.1 or
                             localhost is accepted, as for a desktop client)
  --user MAILBOX             who signs in at the Connect page (and a user of
                             the Workspace domain)
  --service-account EMAIL    makes a service account, writes its JSON key to
                             --key-out and grants it domain-wide delegation
                             for https://mail.google.com/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			g, err := fakegoogle.Start()
			if err != nil {
				return err
			}
			defer g.Close()
			clients, _ := cmd.Flags().GetStringArray("client")
			users, _ := cmd.Flags().GetStringArray("user")
			sas, _ := cmd.Flags().GetStringArray("service-account")
			keyOut, _ := cmd.Flags().GetString("key-out")
			caFile, _ := cmd.Flags().GetString("ca-out")
			for _, c := range clients {
				id, secret, ok := strings.Cut(c, "=")
				if !ok || id == "" || secret == "" {
					return fmt.Errorf("--client %q: want CLIENT_ID=SECRET", c)
				}
				g.OAuth.RegisterClient(id, secret, "http://127.0.0.1", "http://localhost")
			}
			for _, u := range users {
				g.OAuth.SignInAs(u) // the last one signs in
			}
			if caFile == "" {
				// One per run: two fakes never overwrite each other's CA.
				f, err := os.CreateTemp("", "fakegoogle-ca-*.pem")
				if err != nil {
					return err
				}
				f.Close()
				caFile = f.Name()
			}
			if abs, err := filepath.Abs(caFile); err == nil {
				caFile = abs
			}
			if err := g.WriteCA(caFile); err != nil {
				return err
			}
			fmt.Fprintf(w, "# fake Google running; on a provider: google account in oauthrelay.yaml:\n")
			fmt.Fprintf(w, "#   authority: %s\n#   upstream: %s\n# and upstream.ca_file: %s\n", g.OAuthURL, g.SMTPAddr, caFile)
			for i, email := range sas {
				sa, err := g.OAuth.NewServiceAccount(email)
				if err != nil {
					return err
				}
				g.OAuth.GrantDelegation(sa.ClientID, tokens.GoogleScope)
				path := keyOut
				if path == "" || len(sas) > 1 {
					f, err := os.CreateTemp("", fmt.Sprintf("fakegoogle-sa-%d-*.json", i))
					if err != nil {
						return err
					}
					f.Close()
					path = f.Name()
				}
				if abs, err := filepath.Abs(path); err == nil {
					path = abs
				}
				if err := os.WriteFile(path, sa.JSON, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(w, "# service account %s (client ID %s, delegated %s): service_account_file: %s\n", email, sa.ClientID, tokens.GoogleScope, path)
			}
			fmt.Fprintf(w, "# Ctrl-C stops\n")
			seen := 0
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-t.C:
					msgs := g.SMTP.Messages()
					for _, m := range msgs[seen:] {
						fmt.Fprintf(w, "accepted: MAIL FROM:<%s> RCPT TO:<%s> %d bytes, signed in as %s\n",
							m.From, strings.Join(m.To, ">,<"), len(m.Data), m.Mailbox)
					}
					seen = len(msgs)
				}
			}
		},
	}
	cmd.Flags().StringArray("client", nil, "CLIENT_ID=SECRET: an OAuth client; repeatable")
	cmd.Flags().StringArray("user", nil, "MAILBOX: a user of the domain; the last one given signs in at the Connect page; repeatable")
	cmd.Flags().StringArray("service-account", nil, "EMAIL: a service account with domain-wide delegation; repeatable")
	cmd.Flags().String("key-out", "", "where to write the (first) service account's JSON key (default: a new file in the temp folder)")
	cmd.Flags().String("ca-out", "", "where to write the CA certificate for upstream.ca_file (default: a new file in the temp folder)")
	return cmd
}
