// Package fakegoogle is a fake Google Workspace for tests: an OAuth 2.0
// server standing in for accounts.google.com and oauth2.googleapis.com
// (authorize with PKCE, token for the authorization-code, refresh-token and
// service-account JWT grants, and a device-code endpoint that refuses
// Gmail's scope, as Google's does), and an SMTP submission server that
// behaves like smtp.gmail.com:587 (STARTTLS before AUTH, XOAUTH2 checked
// against the tokens the fake issued, Gmail's texts), with fault injection
// and counters. Both listen on 127.0.0.1 with port 0 and talk to nothing
// else; TLS uses a fakem365 CA.
//
// It is test infrastructure: relay, queue and tokens must never import it.
// It mirrors fakem365 in shape; it does not model Gmail's IMAP or POP.
//
// # What the fake checks, and what it answers
//
// Authorize (GET AuthorizePath): unknown client, an error page "Error 401:
// invalid_client" ("The OAuth client was not found."); redirect_uri not
// registered, "Error 400: redirect_uri_mismatch"; otherwise a 302 to
// redirect_uri with code, scope and state, or error=access_denied when
// declined (DeclineNextAuthorize) or nobody signed in (SignInAs). A
// loopback redirect registered without a port matches any port.
//
// Token (POST TokenPath), JSON {"error","error_description"}:
//   - authorization_code and refresh_token need client_id and
//     client_secret (form or Basic): no client_id, 400 invalid_request
//     "Could not determine client ID from request."; no secret, 400
//     invalid_request "client_secret is missing."; unknown client, 401 invalid_client "The
//     OAuth client was not found."; wrong secret, 401 invalid_client
//     "Unauthorized".
//   - authorization_code: unknown, used or expired code, 400 invalid_grant
//     "Bad Request"; other redirect_uri, 400 redirect_uri_mismatch "Bad
//     Request"; PKCE: 400 invalid_grant "Missing code verifier." / "Invalid
//     code verifier." / "code_verifier or verifier is not needed.".
//     Success: access_token, expires_in 3599, scope, token_type "Bearer",
//     refresh_token only with access_type=offline, an unsigned id_token with
//     "email" when the scope has openid or email.
//   - refresh_token: unknown or revoked (RevokeAll), 400 invalid_grant
//     "Token has been expired or revoked."; no new refresh token.
//   - jwt-bearer (service account, RFC 7523): unknown iss, 400 invalid_grant
//     "Invalid grant: account not found"; bad RS256 signature, 400
//     invalid_grant "Invalid JWT Signature."; aud not the token URL, 400
//     invalid_grant "Invalid JWT: Failed audience check."; iat/exp missing,
//     exp-iat over 65 minutes, expired or iat in the future, 400
//     invalid_grant "Invalid JWT: Token must be a short-lived token (60
//     minutes) …"; no scope, 400 invalid_scope; sub not a user of the domain,
//     400 invalid_grant "Invalid email or User ID"; a scope without
//     domain-wide delegation (GrantDelegation), 401 unauthorized_client
//     "Client is unauthorized to retrieve access tokens using this method,
//     or client not authorized for any of the scopes requested.". The token
//     endpoint does not require https://mail.google.com/ (Google does not);
//     SMTP does.
//
// Device code (POST DeviceCodePath): a scope outside the device flow's
// list, such as https://mail.google.com/, gets 400 invalid_scope "Invalid
// device flow scope: <scope>" (the first offender). The fake never approves
// a device code.
//
// SMTP: greeting "220 smtp.gmail.com ESMTP <id> - gsmtp"; EHLO "250-
// smtp.gmail.com at your service, [ip]", SIZE 35882577, 8BITMIME, STARTTLS
// (before TLS) or AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER
// XOAUTH (after), ENHANCEDSTATUSCODES, PIPELINING, CHUNKING, SMTPUTF8. AUTH
// or MAIL before STARTTLS: 530 5.7.0 "Must issue a STARTTLS command
// first."; commands pipelined after STARTTLS: 454 4.5.0. XOAUTH2 with a live
// token of user= carrying https://mail.google.com/: "235 2.7.0 Accepted";
// otherwise "334 base64({"status":…,"schemes":…,"scope":
// "https://mail.google.com/"})", and after the client's (empty) answer the
// two-line 535 5.7.8 BadCredentials reply. Status 400 ("Bearer") for a valid
// token of another user or without the mail scope, 401 ("bearer mac") for
// a token Google does not know, has revoked or let expire. PLAIN and LOGIN
// always fail (the fake has no app passwords). MAIL without AUTH: 530 5.7.0
// WantAuthError. Accepted messages are recorded byte for byte, nothing is
// rewritten. Reply* are Gmail's notable replies for FailNext; a 421 closes
// the connection.
//
// # Sources (checked 2026-11-28 with the project's search tool)
//
// Confirmed from Google's documentation:
//   - XOAUTH2 format, the error challenge as base64 JSON with status,
//     schemes, scope (example {"status":"401","schemes":"bearer mac",
//     "scope":"https://mail.google.com/"}), the empty client answer, and
//     https://mail.google.com/ as the scope for IMAP/POP/SMTP:
//     https://developers.google.com/gmail/imap/xoauth2-protocol
//   - Service-account error table (invalid_grant "Invalid JWT Signature.",
//     "Invalid email or User ID", the "short-lived token (60 minutes)" text
//     and its 65-minute bound, invalid_scope "Invalid OAuth scope or ID
//     token audience provided.", unauthorized_client "Client is
//     unauthorized … scopes requested."):
//     https://developers.google.com/identity/protocols/oauth2/service-account#error-codes
//     (read in a stored pt-BR copy of the page, updated 2026-03-23)
//   - The device flow's limited scope list:
//     https://developers.google.com/identity/protocols/oauth2/limited-input-device#allowedscopes
//   - Gmail SMTP error list (421 4.7.0 "Try again later, closing
//     connection.", 452 4.5.3 "Your message has too many recipients. …",
//     454 4.5.0 pipelining after STARTTLS, gsmtp suffix on every error):
//     https://support.google.com/a/answer/3726730
//
// Confirmed from replies users quoted (not Google's word, but Google's bytes):
//   - Post-TLS EHLO lines and AUTH list, "at your service, [ip]":
//     https://github.com/curl/curl/issues/10259 ; SIZE 35882577, "235 2.7.0
//     Accepted", "250 2.1.0 OK", "250 2.1.5 OK", "250 2.0.0 OK <ts> <id> -
//     gsmtp": https://github.com/kisli/vmime/issues/110 ; pre-TLS keywords
//     with STARTTLS and "354 Go ahead <id> - gsmtp" (mx.google.com):
//     https://github.com/The-Login/SMTP-Smuggling-Tools/issues/11
//   - 535-5.7.8 "Username and Password not accepted. For more information,
//     go to" / "535 5.7.8  https://support.google.com/mail/?p=BadCredentials
//     <id> - gsmtp": https://github.com/dawidd6/action-send-mail/issues/205
//   - XOAUTH2 challenge {"status":"400","schemes":"Bearer","scope":
//     "https://mail.google.com/"} from smtp.gmail.com:
//     https://go-mk-websites.co.uk/post/smtp-with-google-xoauth2-results-in-error-status-400
//   - 550-5.4.5 "Daily user sending limit exceeded. For more information on
//     Gmail" / "sending limits go to" / "550 5.4.5  https://support.google.com/a/answer/166852":
//     https://github.com/onepub-dev/onepub/issues/543 ; 2,000 a day for
//     Workspace: https://github.com/dwyl/email/issues/2 (citing
//     https://support.google.com/a/answer/166852)
//   - 530 Authentication Required, WantAuthError:
//     https://github.com/PHPMailer/PHPMailer/issues/2077 ,
//     https://github.com/node-red/node-red/issues/1199 (older 5.5.1 form)
//   - 454 4.7.0 "Too many login attempts, please try again later.":
//     https://serverdevworker.com/51541f750
//   - Token endpoint: "client_secret is missing." (400, PKCE request):
//     https://github.com/wi3land/ionic-appauth/issues/56 ; invalid_client
//     "Unauthorized" (401): https://github.com/adrielcafe/AndroidOAuth/issues/2 ,
//     https://github.com/teranetsrl/oauth2_client/issues/145 ; "The OAuth
//     client was not found." (401):
//     https://github.com/Edujugon/laravel-google-ads/issues/17 ; "Invalid
//     code verifier.": https://github.com/googleapis/google-api-java-client/issues/1479 ;
//     "Missing code verifier.": https://github.com/taylorwilsdon/google_workspace_mcp/pull/532 ;
//     "code_verifier or verifier is not needed":
//     https://github.com/googleapis/google-api-nodejs-client/issues/3680 ;
//     "Token has been expired or revoked.":
//     https://github.com/googleworkspace/python-samples/issues/1644
//   - invalid_request "Could not determine client ID from request.":
//     https://github.com/openid/AppAuth-iOS/issues/226
//   - unauthorized_client answered with HTTP 401:
//     https://github.com/googleapis/google-auth-library-ruby/issues/210 ,
//     https://github.com/hlavki/g-suite-identity-sync/issues/7
//   - Device flow "invalid_scope: Invalid device flow scope: <scope>":
//     https://docs.rs/grr-cli/2.1.0/src/grr_cli/core/auth/device.rs.html
//   - Authorize pages "Error 400: redirect_uri_mismatch … does not match the
//     ones authorized for the OAuth client." and "invalid_client / The
//     OAuth client was not found." (given there as Error 400; the fake
//     answers 401 as the brief and older reports say):
//     https://docs.onetapwoo.com/troubleshooting/google-api-errors
//
// Not confirmed (the fake's best guess): "Bad Request" for a reused code and
// for redirect_uri_mismatch at the token endpoint; "Invalid grant: account
// not found" and "Invalid JWT: Failed audience check." (seen only in a
// third-party mock that says it checked them); whether Gmail sends 401 or
// 400 for an expired token (reports show 400 for most failures); the
// OAUTHBEARER failure statuses (RFC 7628's names; curl#10259 shows
// "invalid_request"); the line wrapping of the 452, 552 and 550 5.1.1
// replies; the 221 and RSET texts; the device-flow HTTP status (400); that
// the jwt-bearer reply carries no scope; whether Google checks delegation
// per scope (the fake refuses if any requested scope lacks it; Google's table
// also lists access_denied for that case).
package fakegoogle
