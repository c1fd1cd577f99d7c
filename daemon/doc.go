// Package daemon assembles oauthrelay: it builds every component from the
// configuration — the token manager, the queue, the SMTP listener and the
// upstream (package relay), the admin server, metrics and the alert webhook
// — wires them to each other, starts them and stops them in order. It is
// the only package that knows all of them; the components know only the
// small interfaces they are given. cmd/oauthrelay calls it for serve and
// demo; the integration tests call it to run a whole relay in process.
package daemon
