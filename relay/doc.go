// Package relay is the SMTP side of oauthrelay: the listener applications
// send to (its own SMTP server, smtpconn.go: access control, addresses
// parsed as RFC 5321 mailboxes, routing a sender to an account, limits,
// streaming DATA into the queue), upstream delivery to Microsoft 365
// (go-smtp client with STARTTLS and XOAUTH2, pooled and paced per account),
// classification of upstream replies, the pre-flight check, DSN bounces,
// and (in relay/admin) the admin HTTP server. Building these from the
// configuration and wiring them to the queue and tokens is package daemon's
// job, not relay's: relay is one component, and inbound will be a sibling.
//
// relay never writes files itself (the queue does) and never holds a bearer
// token: tokens gives it a ready SASL client (tokens.Manager.Auth).
package relay
