// Package tokens obtains, caches, refreshes and keeps OAuth2 tokens for the
// Microsoft 365 accounts: the encrypted keysafe, the access-token cache with
// one refresh at a time per account, refresh-token rotation (each new refresh
// token is persisted before the access token that came with it is used), the
// Connect (authorization code + PKCE), device code and client credentials
// flows (with a client secret, or a client assertion signed with the key of
// a certificate, certificate.go), the XOAUTH2 SASL client, and plain-words
// explanations of Entra ID and SMTP authentication errors.
//
// Secrets never appear in logs, errors or status output: tokens are shown
// only as a short fingerprint, and a certificate's private key never leaves
// this package (others get an assertion). tokens knows nothing of queues.
package tokens
