package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/oauthrelay/oauthrelay/configs"
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
