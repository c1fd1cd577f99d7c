package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/daemon"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/spf13/cobra"
)

// shutdownGrace bounds how long SIGTERM waits for SMTP sessions and
// deliveries in flight (systemd's default TimeoutStopSec is 90 s).
const shutdownGrace = 30 * time.Second

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the relay: SMTP listener, queue, delivery and admin server",
		Long: `serve runs the relay until SIGTERM or SIGINT, which stop it cleanly: no new
connections, SMTP sessions in progress finish (at most 30 s), deliveries in
flight end, and every queued message is resumed by the next start.
Configuration changes (accounts included) take effect on restart:
systemctl restart oauthrelay — nothing queued is lost by a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loaded, err := mustLoad(func() (*configs.Loaded, error) { return loadConfig(cmd) })
			if err != nil {
				return err
			}
			c := &loaded.Config
			log := newLogger(c.Log, os.Stderr)
			if loaded.File == "" {
				log.Info("no config file found: running on built-in defaults + OAUTHRELAY_* environment variables", "searched", strings.Join(loaded.Searched, ", "))
			} else {
				log.Info("configuration", "file", loaded.File)
			}
			if loaded.Attached != nil {
				log.Info("listen.allowed_networks: attached resolved", "networks", strings.Join(loaded.Attached, ", "))
			}
			r, err := daemon.New(c, log, daemon.Hooks{Version: version})
			if err != nil {
				return err
			}
			if err := r.Start(); err != nil {
				return err
			}
			for _, s := range r.Tokens.States() {
				if s.State != "connected" {
					log.Warn("account needs attention", "account", s.Account, "state", string(s.State), "what_to_do", s.Explanation.String(),
						"connect_url", tokens.ConnectURL(daemon.AdminPublicURL(c), s.Account))
				}
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			for {
				select {
				case <-hup:
					log.Warn("SIGHUP: configuration is read at start only; restart the service to apply changes (queued mail is kept)")
					continue
				case <-cmd.Context().Done():
				}
				break
			}
			log.Info("shutting down", "grace", shutdownGrace.String())
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			if err := r.Shutdown(ctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			log.Info("stopped cleanly")
			return nil
		},
	}
	cmd.Flags().String("listen", "", "SMTP listen address (listen.addr)")
	cmd.Flags().String("admin", "", "admin HTTP address (admin.addr)")
	cmd.Flags().String("spool", "", "spool folder (spool.dir)")
	configs.BindFlag(cmd.Flags(), "listen", "listen.addr")
	configs.BindFlag(cmd.Flags(), "admin", "admin.addr")
	configs.BindFlag(cmd.Flags(), "spool", "spool.dir")
	return cmd
}
