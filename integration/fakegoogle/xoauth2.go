package fakegoogle

import (
	"encoding/json"
	"strings"
)

// MailScope is the scope Gmail requires of a token for IMAP, POP and SMTP.
const MailScope = "https://mail.google.com/"

// xoauth2Server checks "user=<mailbox>\x01auth=Bearer <token>\x01\x01".
// Gmail answers bad credentials not at once but with a 334 challenge
// carrying a JSON error; whatever the client answers to it, 535 follows.
type xoauth2Server struct {
	f          *session
	prompted   bool
	challenged bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.challenged {
		return nil, false, wire(ReplyBadCredentials)
	}
	if resp == nil && !x.prompted {
		x.prompted = true
		return []byte{}, false, nil // "334 " and wait for the credentials
	}
	if err := x.f.credentials(); err != nil {
		return nil, false, err
	}
	var user, bearer string
	for _, kv := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(kv, "user="); ok {
			user = v
		} else if v, ok := strings.CutPrefix(kv, "auth=Bearer "); ok {
			bearer = v
		}
	}
	if status := x.f.check(user, bearer); status != "" {
		x.challenged = true
		return xoauth2Challenge(status), false, nil
	}
	x.f.accept(user)
	return nil, true, nil
}

// check returns "" when token is a live token of user's carrying the mail
// scope, else the status of Gmail's challenge: 401 for a token Google does
// not know (or no longer honours), 400 for one that is valid but not for
// this user or this scope.
func (f *session) check(user, token string) string {
	email, scopes, ok := f.s.OAuth.CheckAccess(token)
	switch {
	case !ok:
		return "401"
	case user == "" || !strings.EqualFold(email, user) || !contains(scopes, MailScope):
		return "400"
	}
	return ""
}

func xoauth2Challenge(status string) []byte {
	// 400 as reported from smtp.gmail.com; 401 as in Google's XOAUTH2
	// document, the only source for that status (doc.go).
	schemes := "Bearer"
	if status == "401" {
		schemes = "bearer mac"
	}
	// Field order as Gmail writes it: status, schemes, scope.
	b, _ := json.Marshal(struct {
		Status  string `json:"status"`
		Schemes string `json:"schemes"`
		Scope   string `json:"scope"`
	}{status, schemes, MailScope})
	return b
}

// oauthBearerServer checks an RFC 7628 OAUTHBEARER initial response,
// "n,a=<user>,\x01host=…\x01port=…\x01auth=Bearer <token>\x01\x01". On
// failure it sends the RFC 7628 section 3.2.2 JSON challenge; the client's
// "\x01" then gets 535.
type oauthBearerServer struct {
	f          *session
	prompted   bool
	challenged bool
}

func (o *oauthBearerServer) Next(resp []byte) ([]byte, bool, error) {
	if o.challenged {
		return nil, false, wire(ReplyBadCredentials)
	}
	if resp == nil && !o.prompted {
		o.prompted = true
		return []byte{}, false, nil
	}
	if err := o.f.credentials(); err != nil {
		return nil, false, err
	}
	parts := strings.Split(string(resp), "\x01")
	var user, bearer string
	for _, gs := range strings.Split(parts[0], ",") {
		if v, ok := strings.CutPrefix(gs, "a="); ok {
			user = v
		}
	}
	for _, kv := range parts[1:] {
		if v, ok := strings.CutPrefix(kv, "auth=Bearer "); ok {
			bearer = v
		}
	}
	status := ""
	switch {
	case !strings.HasPrefix(parts[0], "n,") && !strings.HasPrefix(parts[0], "y,"), bearer == "":
		status = "invalid_request"
	case o.f.check(user, bearer) == "401":
		status = "invalid_token"
	case o.f.check(user, bearer) == "400":
		status = "insufficient_scope"
	}
	if status != "" {
		o.challenged = true
		b, _ := json.Marshal(struct {
			Status string `json:"status"`
			Scope  string `json:"scope"`
		}{status, MailScope})
		return b, false, nil
	}
	o.f.accept(user)
	return nil, true, nil
}

// loginServer runs AUTH LOGIN's two prompts and refuses the password: the
// fake has no app passwords.
type loginServer struct {
	f    *session
	step int // 0: nothing yet, 1: asked for the user name, 2: asked for the password
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case l.step == 0 && resp == nil:
		l.step = 1
		return []byte("Username:"), false, nil
	case l.step < 2: // the user name, as initial response or answer
		l.step = 2
		return []byte("Password:"), false, nil
	}
	if err := l.f.credentials(); err != nil {
		return nil, false, err
	}
	return nil, false, wire(ReplyBadCredentials)
}

// refuseServer takes one set of credentials and refuses them.
type refuseServer struct {
	f        *session
	prompted bool
}

func (r *refuseServer) Next(resp []byte) ([]byte, bool, error) {
	if resp == nil && !r.prompted {
		r.prompted = true
		return []byte{}, false, nil
	}
	if err := r.f.credentials(); err != nil {
		return nil, false, err
	}
	return nil, false, wire(ReplyBadCredentials)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
