package tokens

import (
	"context"
	"errors"
	"net/url"

	"github.com/oauthrelay/oauthrelay/internal/credfile"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// appCredentials is the client-credentials request of an app-only
// account: its client secret, or a client assertion signed with its
// certificate. The certificate files are read on every request (about
// once an hour) so that a renewed certificate is used without a restart.
func (m *Manager) appCredentials(a *account) (*clientcredentials.Config, error) {
	if !a.certificate() {
		return a.cc, nil
	}
	c, err := m.loadCertificate(a)
	if err != nil {
		return nil, err
	}
	tokenURL := a.endpoint().TokenURL
	assertion, err := c.Assertion(a.ClientID, tokenURL, m.opts.Now())
	if err != nil {
		return nil, err
	}
	// No ClientSecret: with AuthStyleInParams, x/oauth2 then sends only
	// client_id, and the assertion authenticates the client.
	return &clientcredentials.Config{ClientID: a.ClientID, TokenURL: tokenURL, Scopes: a.appScopes(),
		AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {ClientAssertionType},
			"client_assertion":      {assertion},
		}}, nil
}

// loadCertificate reads a's certificate pair, notes its expiry and
// refuses it outside its validity period.
func (m *Manager) loadCertificate(a *account) (*Certificate, error) {
	c, err := LoadCertificate(a.CertFile, a.KeyFile)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.certExpiry = c.Leaf.NotAfter
	a.mu.Unlock()
	if err := c.validAt(m.opts.Now()); err != nil {
		return nil, err
	}
	return c, nil
}

// explainCertificate is the account's explanation for a credential file
// (certificate pair, service account key) that cannot be used.
func explainCertificate(err error) Explanation {
	var ce *CertificateError
	if !errors.As(err, &ce) {
		return Explanation{Title: "the client certificate cannot be used", Detail: err.Error(),
			Action: "check accounts[].client_certificate_file and client_key_file"}
	}
	title := "the client certificate cannot be used"
	if ce.Key == "service_account_file" {
		title = "the service account's key file cannot be used"
	}
	return Explanation{
		Title:  title + ": " + ce.File + " " + ce.Problem,
		Action: "accounts[]." + ce.Key + ": " + ce.Fix,
	}
}

// certStamp identifies the current contents of a's credential files (the
// certificate pair, the service account key).
func certStamp(a Account) string {
	return credfile.Stamp(a.CertFile, a.KeyFile, a.ServiceAccountFile)
}

// retryNewCertificate tries a misconfigured certificate account again
// once its certificate or key file has changed since it was refused: a
// renewed certificate resumes the account's mail without a restart.
func (m *Manager) retryNewCertificate(ctx context.Context, a *account) {
	now := certStamp(a.Account)
	a.mu.Lock()
	stamp := a.certStamp
	if stamp != "" && now != stamp {
		a.certStamp = now // one try per change, even if Entra cannot be reached
	}
	a.mu.Unlock()
	if stamp == "" || now == stamp {
		return
	}
	if err := m.ForceRefresh(ctx, a.Name); err == nil {
		m.putState(a, Connected, Explanation{}, true)
		m.log.Info("tokens: new client certificate works; the account's mail resumes", "account", a.Name)
	}
}
