// Command oauthrelay lets applications that only speak plain SMTP send mail
// through Microsoft 365 with OAuth2 (XOAUTH2). This package is wiring only:
// serve and demo run the relay that package daemon assembles; the client
// commands (accounts, queue, check, health, send, sendmail) talk to a running
// relay over its admin API or SMTP listener. Two kinds of offline tool reach
// into the components directly, by design: `queue dump` reads a spool with
// queue.Inspect (relay running or not), and `connect` with no relay running
// signs in through tokens itself (while serve runs it goes through serve).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if filepath.Base(os.Args[0]) == "sendmail" {
		// Installed as /usr/sbin/sendmail: Sendmail's command line, not ours.
		root.SetArgs(append([]string{"sendmail"}, os.Args[1:]...))
	}
	if err := root.ExecuteContext(ctx); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			fmt.Fprintln(os.Stderr, "oauthrelay:", exit.err)
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "oauthrelay:", err)
		os.Exit(1)
	}
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "oauthrelay",
		Short: "SMTP relay that sends through Microsoft 365 with OAuth2",
		Long: `oauthrelay accepts plain SMTP from your applications on localhost:2525,
keeps every message durably on disk, and forwards it to Microsoft 365
(smtp.office365.com:587, STARTTLS, XOAUTH2) with OAuth2 tokens it obtains,
refreshes and keeps encrypted itself.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "config file (default ./oauthrelay.yaml, then /etc/oauthrelay/oauthrelay.yaml)")
	root.AddCommand(
		newVersionCmd(),
		newCheckConfigCmd(),
		newServeCmd(),
		newDemoCmd(),
		newConnectCmd(),
		newAccountsCmd(),
		newQueueCmd(),
		newSendCmd(),
		newSendmailCmd(),
		newHealthCmd(),
		newCheckCmd(),
		newTokenCmd(),
		newFakeM365Cmd(),
		newFakeGoogleCmd(),
	)
	return root
}

// loadConfig loads the configuration for cmd: --config, environment, and
// the command's flags bound with configs.BindFlag.
func loadConfig(cmd *cobra.Command) (*configs.Loaded, error) {
	file, _ := cmd.Flags().GetString("config")
	loaded, err := configs.Load(configs.LoadOptions{File: file, Flags: cmd.Flags()})
	if loaded != nil {
		loaded.Warnings = onlyWarningsAbout(loaded.Warnings, keysUsed(cmd))
		var ps configs.Problems
		if errors.As(err, &ps) {
			if ps = onlyProblemsAbout(ps, keysUsed(cmd)); len(ps) == 0 {
				err = nil
			} else {
				err = ps
			}
		}
	}
	return loaded, err
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			goVersion := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
			}
			fmt.Fprintf(cmd.OutOrStdout(), "oauthrelay %s (%s)\n", version, goVersion)
			return nil
		},
	}
}

func newCheckConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Load and validate the configuration; print it with secrets masked",
		Long: `check-config loads the configuration exactly as serve would (file,
OAUTHRELAY_* environment, flags), reports every problem with the key to fix,
and prints the effective configuration with secrets masked. It also reads
each app-only account's client certificate and key (a key that does not
match, or an expired certificate, is a problem; one that expires within 30
days, a warning), each Google service account's key file, and the users
files. Exit status 0 means serve would start with it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loaded, err := loadConfig(cmd)
			if loaded != nil {
				for _, w := range loaded.Warnings {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
				}
			}
			var problems configs.Problems
			if errors.As(err, &problems) {
				if loaded.File == "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "oauthrelay:", loaded.Source())
				}
				return exitError{code: 2, err: err}
			}
			if err != nil {
				return err
			}
			certProblems, certWarnings := checkCertificates(&loaded.Config, time.Now())
			userProblems, userWarnings := checkUsersFiles(&loaded.Config)
			certProblems, certWarnings = append(certProblems, userProblems...), append(certWarnings, userWarnings...)
			for _, w := range certWarnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if len(certProblems) > 0 {
				return exitError{code: 2, err: certProblems}
			}
			out, err := configs.Effective(&loaded.Config)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "# configuration OK: %s\n", loaded.Source())
			if loaded.Attached != nil {
				fmt.Fprintf(w, "# listen.allowed_networks: attached = %s\n", strings.Join(loaded.Attached, ", "))
			}
			printAccountEndpoints(w, &loaded.Config)
			_, err = w.Write(out)
			return err
		},
	}
}

// printAccountEndpoints says, for each account, where it signs in and which
// servers it uses — what its provider, cloud, kind and overrides add up to.
func printAccountEndpoints(w io.Writer, c *configs.Config) {
	for i := range c.Accounts {
		a := &c.Accounts[i]
		what := a.Provider
		if a.Provider == configs.ProviderMicrosoft {
			what += ", cloud " + a.Cloud
			if a.Kind == configs.KindHVE {
				what += ", High Volume Email"
			}
		}
		ta := daemon.TokenAccounts(&configs.Config{Accounts: []configs.Account{*a}})[0]
		fmt.Fprintf(w, "# account %s (%s, flow %s):\n", a.Name, what, a.Flow)
		fmt.Fprintf(w, "#   sign-in  %s\n", a.Authority)
		cred := ta.Credential()
		if a.ClientCertificateFile != "" {
			cred += " " + a.ClientCertificateFile
			if c, err := tokens.LoadCertificate(a.ClientCertificateFile, a.ClientKeyFile); err == nil {
				cred += " (expires " + c.Leaf.NotAfter.UTC().Format("2006-01-02") + ")"
			}
		}
		fmt.Fprintf(w, "#   with     %s\n", cred)
		fmt.Fprintf(w, "#   scopes   %s\n", strings.Join(tokens.ScopesFor(ta), " "))
		fmt.Fprintf(w, "#   smtp     %s\n", c.SMTPUpstream(a))
		fmt.Fprintf(w, "#   imap     %s\n", c.IMAPUpstream(a))
		fmt.Fprintf(w, "#   pop3     %s\n", c.POP3Upstream(a))
	}
}
