// Package fakem365 is a fake Microsoft 365 for tests and `oauthrelay demo`:
// an Entra ID v2 token service (authorize with PKCE, token for every grant
// the relay uses, device code), an SMTP submission server that behaves
// like smtp.office365.com:587 (STARTTLS before AUTH, XOAUTH2 checked against
// tokens the fake Entra issued, Microsoft's reply codes), with fault injection
// and counters, and implicit-TLS IMAP and POP3 servers like
// outlook.office365.com:993/995 (XOAUTH2 only, with the IMAP or POP
// permission in the token) serving each mailbox's INBOX: what the fake SMTP
// accepted for it, and what a test delivered (M365.Deliver). All listen on
// 127.0.0.1 with port 0 and talk to nothing else.
//
// The behaviour follows shared/M365.md. It is test infrastructure: relay,
// queue and tokens must never import it.
package fakem365
