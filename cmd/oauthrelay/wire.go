package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/spf13/cobra"
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

// mustLoad loads the configuration or returns an exit error that names
// every problem, saying first, if no file was found, where it looked.
func mustLoad(cmdLoad func() (*configs.Loaded, error)) (*configs.Loaded, error) {
	loaded, err := cmdLoad()
	if loaded != nil {
		for _, w := range loaded.Warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
	}
	if err != nil {
		if loaded != nil && loaded.File == "" {
			fmt.Fprintln(os.Stderr, "oauthrelay:", loaded.Source())
		}
		return nil, exitError{code: 2, err: err}
	}
	return loaded, nil
}

// clientKeys are what a command that talks to a running relay reads.
var clientKeys = []string{"admin.addr", "admin.token", "admin.token_file", "keysafe.path", "spool.dir"}

// keysUsed lists the config keys cmd reads, or nil if it reads them all.
// The client commands talk to a running relay and need only its addresses
// and the admin token, so an unset ${VAR} in an account's secret is serve's
// business, not theirs to warn about.
func keysUsed(cmd *cobra.Command) []string {
	top := cmd
	for top.HasParent() && top.Parent().HasParent() {
		top = top.Parent()
	}
	switch top.Name() {
	case "accounts", "queue", "health", "check", "token":
		return clientKeys
	case "send":
		return []string{"listen.addr"}
	}
	return nil
}

// onlyProblemsAbout keeps the problems about keys (all if keys is nil, and
// any that names no key): a client command run as root, without the
// service's environment or its systemd credentials, must not fail on an
// account's secret that only serve reads.
func onlyProblemsAbout(ps configs.Problems, keys []string) configs.Problems {
	if keys == nil {
		return ps
	}
	// A copy: DeleteFunc would clear the tail of ps, which the caller may
	// still print.
	return slices.DeleteFunc(slices.Clone(ps), func(p configs.Problem) bool { return p.Key != "" && !slices.Contains(keys, p.Key) })
}

// onlyWarningsAbout keeps the warnings about keys (all if keys is nil).
func onlyWarningsAbout(ws []configs.Warning, keys []string) []configs.Warning {
	if keys == nil {
		return ws
	}
	return slices.DeleteFunc(ws, func(w configs.Warning) bool { return !slices.Contains(keys, w.Key) })
}
