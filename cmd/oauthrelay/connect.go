package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/spf13/cobra"
)

func newConnectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connect ACCOUNT",
		Short: "Connect an account to Microsoft 365 (sign-in and consent)",
		Long: `connect signs an account in to Microsoft 365 and stores its refresh token
in the keysafe. A running relay picks the new sign-in up within seconds and
delivers the account's waiting mail.

  --device   device-code flow: prints a URL and a code to enter on any
             browser (headless servers, Docker sidecars)
  (default)  the Connect page: if the relay runs, prints its Connect URL;
             otherwise serves the Connect page on admin.addr until the
             sign-in is done`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Through a running relay only the admin keys matter (its
			// accounts' secrets are the service's, perhaps systemd
			// credentials this shell cannot see); signing in here itself
			// needs the whole configuration, checked below.
			file, _ := cmd.Flags().GetString("config")
			loaded, fullErr := configs.Load(configs.LoadOptions{File: file, Flags: cmd.Flags()})
			if loaded == nil {
				return exitError{code: 2, err: fullErr}
			}
			var ps configs.Problems
			if errors.As(fullErr, &ps) && len(onlyProblemsAbout(ps, clientKeys)) > 0 {
				_, err := mustLoad(func() (*configs.Loaded, error) { return loaded, fullErr })
				return err
			}
			c := &loaded.Config
			name := args[0]
			device, _ := cmd.Flags().GetBool("device")
			for _, a := range c.Accounts {
				if a.Name == name && a.Flow == configs.FlowDeviceCode {
					device = true // the flow the account is set up for (no redirect URI needed)
				}
			}
			// While serve runs, the sign-in runs in it, so only the service
			// ever writes its keysafe (files it owns, whoever runs the CLI).
			if api, err := apiClientFor(cmd, c); err == nil {
				var raw json.RawMessage
				switch err := api.call("GET", "/api/accounts", &raw); {
				case err == nil:
					return connectViaServer(cmd, api, c, name, device)
				case !isUnreachable(err):
					return fmt.Errorf("the relay is running at %s but refused the CLI (%v); fix the admin token, or stop serve to connect offline", api.base, err)
				}
			} else if addr := adminDialAddr(c); addr != "" {
				// No admin token here, but is a relay running? Then signing
				// in offline would write its keysafe behind its back.
				if conn, derr := net.DialTimeout("tcp", addr, time.Second); derr == nil {
					conn.Close()
					return fmt.Errorf("a relay is running at %s, and connect goes through it, but this shell has no admin token: %v — export OAUTHRELAY_ADMIN_TOKEN (as the service has it, e.g. from its environment file) or run as a user who may read the token file", addr, err)
				}
			}
			if _, err := mustLoad(func() (*configs.Loaded, error) { return loaded, fullErr }); err != nil {
				return err
			}
			log := newLogger(c.Log, os.Stderr)
			m, err := daemon.OpenTokens(c, log, nil)
			if err != nil {
				return err
			}
			acct, ok := m.Account(name)
			if !ok {
				return exitError{code: 2, err: fmt.Errorf("no account named %q in the configuration", name)}
			}
			if acct.Flow == tokens.FlowClientCredentials || acct.Flow == tokens.FlowServiceAccount {
				if _, err := m.Token(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Account %s signs in app-only (%s): no sign-in needed, and a token was fetched successfully.\n", name, acct.Flow)
				return nil
			}
			out := cmd.OutOrStdout()
			if device {
				upn, err := m.ConnectDevice(cmd.Context(), name, func(dc tokens.DeviceCode) {
					fmt.Fprintln(out, dc.Message)
					fmt.Fprintf(out, "Waiting for the sign-in (the code expires at %s)…\n", dc.Expires.Format("15:04:05"))
				})
				if err != nil {
					return err
				}
				who := upn
				if who == "" {
					who = "the signed-in user"
				}
				if w := tokens.WrongUser(upn, acct.Mailbox); w != "" {
					fmt.Fprintf(out, "Connected as %s — not as %s: mail flows only if %s may send as it.\nWarning: %s.\n", who, acct.Mailbox, who, w)
				} else {
					fmt.Fprintf(out, "Connected as %s; mail for %s flows now.\n", who, acct.Mailbox)
				}
				return nil
			}
			return connectInBrowser(cmd.Context(), c, m, name, out)
		},
	}
	cmd.Flags().Bool("device", false, "use the device-code flow (no browser on this machine needed)")
	return cmd
}

// connectViaServer runs the sign-in in the running relay: a device code
// it shows here and polls for, the Connect page's URL, or (app-only) a
// token fetch.
func connectViaServer(cmd *cobra.Command, api *apiClient, c *configs.Config, name string, device bool) error {
	out := cmd.OutOrStdout()
	var flow string
	for _, a := range c.Accounts {
		if a.Name == name {
			flow = a.Flow
		}
	}
	switch {
	case flow == "":
		return exitError{code: 2, err: fmt.Errorf("no account named %q in the configuration", name)}
	case flow == configs.FlowClientCredentials || flow == configs.FlowServiceAccount:
		var res struct{ Result string }
		if err := api.call("POST", accountPath(name, "retry"), &res); err != nil {
			return err
		}
		fmt.Fprintf(out, "Account %s signs in app-only (%s): no sign-in needed; the relay fetched a token (%s).\n", name, flow, res.Result)
		return nil
	case !device:
		fmt.Fprintf(out, "The relay is running. Open this in a browser and sign in:\n  %s\n", tokens.ConnectURL(daemon.AdminPublicURL(c), name))
		return nil
	}
	var d tokens.DeviceSignIn
	if err := api.call("POST", accountPath(name, "device"), &d); err != nil {
		return err
	}
	fmt.Fprintln(out, d.Message)
	fmt.Fprintf(out, "Waiting for the sign-in (the code expires at %s)…\n", d.Expires.Local().Format("15:04:05"))
	for d.Status == "pending" {
		select {
		case <-cmd.Context().Done():
			return errors.New("stopped waiting; the sign-in can still be completed: the relay keeps polling until the code expires")
		case <-time.After(2 * time.Second):
		}
		if err := api.call("GET", accountPath(name, "device"), &d); err != nil {
			return err
		}
	}
	if d.Status != "connected" {
		return fmt.Errorf("not connected: %s", d.Error)
	}
	who := d.SignedInAs
	if who == "" {
		who = "the signed-in user"
	}
	if d.Warning != "" {
		fmt.Fprintf(out, "Connected as %s — not as the account's mailbox: mail for account %s flows only if %s may send as it.\nWarning: %s.\n", who, name, who, d.Warning)
	} else {
		fmt.Fprintf(out, "Connected as %s; mail for account %s flows now.\n", who, name)
	}
	return nil
}

// isUnreachable: nothing listens at the admin address (serve not running).
func isUnreachable(err error) bool {
	return strings.Contains(err.Error(), "cannot reach the relay's admin API")
}

// connectInBrowser prints the running relay's Connect URL, or serves the
// Connect flow itself until the account is connected.
func connectInBrowser(ctx context.Context, c *configs.Config, m *tokens.Manager, name string, out interface{ Write([]byte) (int, error) }) error {
	url := tokens.ConnectURL(daemon.AdminPublicURL(c), name)
	if conn, err := net.DialTimeout("tcp", c.Admin.Addr, time.Second); err == nil {
		conn.Close()
		fmt.Fprintf(out, "The relay is running. Open this in a browser and sign in:\n  %s\n", url)
		return nil
	}
	ln, err := net.Listen("tcp", c.Admin.Addr)
	if err != nil {
		return fmt.Errorf("admin.addr %s: %w", c.Admin.Addr, err)
	}
	done := make(chan struct{})
	cancel := m.Subscribe(func(s tokens.AccountState) {
		if s.Account == name && s.State == tokens.Connected {
			select {
			case <-done:
			default:
				close(done)
			}
		}
	})
	defer cancel()
	// Without serve there is no admin login here: only whoever has the
	// printed link (with its one-time key) may start a sign-in. The
	// callback is bound to that start by its single-use state.
	var k [16]byte
	rand.Read(k[:])
	key := hex.EncodeToString(k[:])
	srv := &http.Server{Handler: keyedConnect(m.ConnectHandler(), key), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Fprintf(out, "Open this in a browser and sign in (redirect URI %s/oauth/callback must be registered):\n  %s?key=%s\nWaiting…\n", daemon.AdminPublicURL(c), url, key)
	select {
	case <-done:
		time.Sleep(500 * time.Millisecond) // let the result page reach the browser
		fmt.Fprintf(out, "Connected: %s\n", name)
		return nil
	case <-ctx.Done():
		return errors.New("interrupted before the sign-in was completed")
	}
}

// keyedConnect lets /connect/… through only with ?key=key.
func keyedConnect(h http.Handler, key string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/connect/") && subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("key")), []byte(key)) != 1 {
			http.Error(w, "403: this Connect page is served by `oauthrelay connect`; open the exact link it printed (it carries a one-time key).", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
