// Package relay is the SMTP side of oauthrelay: the listener applications
// send to (its own SMTP server, smtpconn.go: access control, addresses
// parsed as RFC 5321 mailboxes, routing a sender to an account, limits,
// streaming DATA into the queue), upstream delivery to Microsoft 365
// (go-smtp client with STARTTLS and XOAUTH2, pooled and paced per account),
// classification of upstream replies, DSN bounces, and the admin HTTP server.
//
// relay never writes files itself (the queue does) and never sends a bearer
// token over a connection without TLS.
package relay
