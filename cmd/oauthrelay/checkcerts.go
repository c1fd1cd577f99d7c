package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/inbound"
	"github.com/oauthrelay/oauthrelay/internal/credfile"
	"github.com/oauthrelay/oauthrelay/relay"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// certificateWarning is how long before a client certificate expires
// check-config (like the running relay) starts to warn.
const certificateWarning = 30 * 24 * time.Hour

// checkCertificates reads each account's client certificate and key, and
// each Google service account's key file, as a token request would: a pair that cannot be used, or an expired
// certificate, is a problem; one that expires within 30 days, a warning.
// A file this user may not read is a warning only: check-config often runs
// as another user than serve.
func checkCertificates(c *configs.Config, now time.Time) (configs.Problems, []string) {
	var problems configs.Problems
	var warnings []string
	for i, a := range c.Accounts {
		if a.Flow == configs.FlowServiceAccount && a.ServiceAccountFile != "" {
			_, err := tokens.ReadServiceAccount(a.ServiceAccountFile)
			var ce *tokens.CertificateError
			switch {
			case err == nil:
			case errors.As(err, &ce) && errors.Is(err, fs.ErrPermission):
				warnings = append(warnings, fmt.Sprintf("accounts[%d].service_account_file: %s cannot be read by this user, so it was not checked — make sure the user serve runs as can read it", i, ce.File))
			case errors.As(err, &ce):
				problems = append(problems, configs.Problem{Key: fmt.Sprintf("accounts[%d].service_account_file", i), Msg: ce.File + " " + ce.Problem + " — " + ce.Fix})
			}
		}
		if a.ClientCertificateFile == "" || a.ClientKeyFile == "" {
			continue
		}
		res, err := tokens.CheckCertificate(a.ClientCertificateFile, a.ClientKeyFile, now, certificateWarning)
		var ce *tokens.CertificateError
		switch {
		case err == nil:
			if res.Warning != "" {
				warnings = append(warnings, fmt.Sprintf("accounts[%d].client_certificate_file (%s): %s", i, a.Name, res.Warning))
			}
		case errors.As(err, &ce) && errors.Is(err, fs.ErrPermission):
			warnings = append(warnings, fmt.Sprintf("accounts[%d].%s: %s cannot be read by this user, so it was not checked — make sure the user serve runs as can read it", i, ce.Key, ce.File))
		case errors.As(err, &ce):
			problems = append(problems, configs.Problem{Key: fmt.Sprintf("accounts[%d].%s", i, ce.Key), Msg: ce.File + " " + ce.Problem + " — " + ce.Fix})
		default:
			problems = append(problems, configs.Problem{Key: fmt.Sprintf("accounts[%d].client_certificate_file", i), Msg: err.Error()})
		}
	}
	return problems, warnings
}

// checkUsersFiles reads the files serve reads at start — upstream.ca_file,
// listen.tls's pair, listen.auth.users_file and inbound.users_file — so
// what serve would refuse (a missing file, a line with an account appended
// to a blank one, a hash that is not bcrypt, an unknown account) is found
// here; a file this user may not read is a warning only.
func checkUsersFiles(c *configs.Config) (configs.Problems, []string) {
	var problems configs.Problems
	var warnings []string
	check := func(key, path string, load func() error) {
		if path == "" {
			return
		}
		switch err := load(); {
		case err == nil:
		case errors.Is(err, fs.ErrPermission):
			warnings = append(warnings, fmt.Sprintf("%s: %s cannot be read by this user, so it was not checked — make sure the user serve runs as can read it", key, path))
		default:
			problems = append(problems, configs.Problem{Key: key, Msg: strings.TrimPrefix(strings.TrimPrefix(err.Error(), key+": "), key+" ")})
		}
	}
	check("upstream.ca_file", c.Upstream.CAFile, func() error {
		pem, err := credfile.Read(c.Upstream.CAFile)
		if err != nil {
			return err
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate — name the CA certificate (-----BEGIN CERTIFICATE-----) to trust", c.Upstream.CAFile)
		}
		return nil
	})
	if c.Listen.TLS.CertFile != "" {
		check("listen.tls.cert_file", c.Listen.TLS.CertFile, func() error {
			cert, err := credfile.Read(c.Listen.TLS.CertFile)
			if err != nil {
				return err
			}
			key, err := credfile.Read(c.Listen.TLS.KeyFile)
			if err != nil {
				return fmt.Errorf("listen.tls.key_file: %w", err)
			}
			if _, err := tls.X509KeyPair(cert, key); err != nil {
				return fmt.Errorf("%s and %s are not a certificate and its key: %v", c.Listen.TLS.CertFile, c.Listen.TLS.KeyFile, err)
			}
			return nil
		})
	}
	check("listen.auth.users_file", c.Listen.Auth.UsersFile, func() error {
		_, err := relay.LoadUsers(c.Listen.Auth.UsersFile)
		return err
	})
	if c.Inbound.Enabled() {
		mailboxes := map[string]string{}
		for _, a := range c.Accounts {
			mailboxes[a.Name] = a.Mailbox
		}
		check("inbound.users_file", c.Inbound.UsersFile, func() error {
			_, err := inbound.LoadUsers(c.Inbound.UsersFile, mailboxes)
			return err
		})
	}
	return problems, warnings
}
