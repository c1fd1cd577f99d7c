package tokens

import (
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// What a token endpoint answers is outside input: any body, for either
// provider and any flow, is explained (never a panic) and is never
// mistaken for a success.
func FuzzClassifyTokenError(f *testing.F) {
	for _, s := range []string{
		`{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired","error_codes":[50173]}`,
		`{"error":"invalid_client","error_description":"AADSTS700027: Client assertion failed signature validation."}`,
		`{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`,
		`{"error":"unauthorized_client","error_description":"Client is unauthorized to retrieve access tokens using this method"}`,
		`{"error_codes":[]}`, `{"error_codes":[-1]}`, `AADSTS99999999999999999999`, ``, `null`, `[]`,
	} {
		f.Add(s, uint8(0))
	}
	flows := []string{FlowAuthorizationCode, FlowDeviceCode, FlowClientCredentials, FlowServiceAccount}
	f.Fuzz(func(t *testing.T, body string, pick uint8) {
		a := Account{Name: "x", Tenant: "t", ClientID: "c", Mailbox: "m@x.test", Authority: "https://login.example",
			Flow: flows[int(pick)%len(flows)]}
		if pick&4 != 0 {
			a.Provider = ProviderGoogle
		}
		re := &oauth2.RetrieveError{Response: &http.Response{StatusCode: 400}, Body: []byte(body)}
		if i := strings.Index(body, "AADSTS"); i >= 0 {
			re.ErrorDescription = body[i:]
		}
		st, ex, transient := classify(re, a, "http://localhost/oauth/callback")
		if transient {
			t.Fatalf("a 400 taken as transient: %q", body)
		}
		if st == Connected || st == "" || ex.Title == "" {
			t.Fatalf("state %q, explanation %+v for %q", st, ex, body)
		}
		// XOAUTH2's challenge comes from the mail server: never a success.
		x := &XOAuth2{User: "m", Token: "t"}
		x.Start()
		x.Next([]byte(body))
		if resp, err := x.Next([]byte(body)); err == nil && resp == nil {
			t.Fatalf("a second challenge %q read as success", body)
		}
	})
}
