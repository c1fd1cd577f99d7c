package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// newLogger builds the slog logger described by log.*.
func newLogger(c configs.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// adminPublicURL is admin.public_url, or the admin address as a URL.
func adminPublicURL(c *configs.Config) string {
	if c.Admin.PublicURL != "" {
		return strings.TrimRight(c.Admin.PublicURL, "/")
	}
	return "http://" + c.Admin.Addr
}

// tokenAccounts maps configured accounts to the tokens package's view.
func tokenAccounts(c *configs.Config) []tokens.Account {
	out := make([]tokens.Account, 0, len(c.Accounts))
	for _, a := range c.Accounts {
		out = append(out, tokens.Account{Name: a.Name, Tenant: a.Tenant, ClientID: a.ClientID,
			ClientSecret: a.ClientSecret, Flow: a.Flow, Mailbox: a.Mailbox, Authority: a.Authority})
	}
	return out
}

// openTokens opens the keysafe (creating its key on first start) and the
// token manager.
func openTokens(c *configs.Config, log *slog.Logger) (*tokens.Manager, error) {
	key, err := tokens.LoadKey(c.Keysafe.Key, c.Keysafe.KeyFile, c.Keysafe.Path, log)
	if err != nil {
		return nil, err
	}
	store, err := tokens.OpenFileKeysafe(c.Keysafe.Path, key)
	if err != nil {
		return nil, err
	}
	return tokens.NewManager(tokens.Options{
		Accounts:          tokenAccounts(c),
		Store:             store,
		RedirectURL:       adminPublicURL(c) + "/oauth/callback",
		RefreshSkew:       c.Tokens.RefreshSkew,
		BackgroundRefresh: c.Tokens.BackgroundRefresh,
		Logger:            log,
	})
}

// mustLoad loads the configuration or returns an exit error that names
// every problem.
func mustLoad(cmdLoad func() (*configs.Loaded, error)) (*configs.Loaded, error) {
	loaded, err := cmdLoad()
	if loaded != nil {
		for _, w := range loaded.Warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
	}
	if err != nil {
		return nil, exitError{code: 2, err: err}
	}
	return loaded, nil
}
