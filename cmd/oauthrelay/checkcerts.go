package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
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
