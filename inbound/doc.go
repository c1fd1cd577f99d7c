// Package inbound serves local IMAP and POP3 to applications that only know
// a password: a client signs in with a local user (bcrypt, users file), the
// package signs in to Exchange Online as that user's account with XOAUTH2
// and the account's access token, and from then on relays the session byte
// for byte. The client's password never leaves this process; the token
// never reaches the client.
//
// Before login each proxy speaks just enough of its protocol itself
// (imap.go, pop3.go); after it, it understands nothing (pipe.go).
//
// What happens on each kind of failure, stated once:
//
//   - client outside listen.allowed_networks: a BYE / -ERR and the
//     connection closes, before any command.
//   - login from anywhere but loopback without TLS: refused at LOGIN /
//     AUTHENTICATE / USER / AUTH, before any continuation asks for a
//     password (IMAP NO [PRIVACYREQUIRED], POP3 -ERR [SYS/PERM]). With
//     listen.tls's certificate, STARTTLS (IMAP) / STLS (POP3) is offered and
//     a login after it is allowed (the rule of SMTP AUTH); commands sent
//     after STARTTLS before the handshake end the session (CVE-2011-0411).
//   - wrong local password or unknown user: IMAP NO [AUTHENTICATIONFAILED],
//     POP3 -ERR [AUTH]; nothing goes upstream; the address's failures feed a
//     lockout (internal/lockout), during which every login is refused as temporary.
//     A right password is remembered for LoginCacheTTL (logincache.go) so
//     the next login skips bcrypt; a wrong one never is.
//   - the account's sessions are at inbound.max_connections_per_account: a
//     temporary refusal (IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]).
//   - no token (the account needs attention, or Entra ID is unreachable): a
//     temporary refusal; the account's state says why.
//   - upstream unreachable or speaking nonsense: IMAP * BYE [UNAVAILABLE],
//     POP3 -ERR [SYS/TEMP], and the connection closes.
//   - upstream refuses the token: the token is dropped (Invalidate) and the
//     login tried once more with a fresh one; a second refusal is recorded
//     for the account and protocol (TokenSource.AuthRefused), which stops
//     further logins of that protocol until the account is signed in again
//     or retried, and the client gets a temporary refusal — never
//     [AUTHENTICATIONFAILED] / [AUTH], which a client takes for a wrong
//     password and asks its user for a new one.
//
// inbound must not import relay or queue (DESIGN.md); it shares only tokens.
package inbound
