package tokens

import (
	"context"
	"errors"
	"time"
)

// DeviceSignIn is a device-code sign-in run by the relay itself, for the
// admin page and for `oauthrelay connect --device` while serve runs: the
// service's own process then writes its own keysafe.
type DeviceSignIn struct {
	Account         string    `json:"account"`
	Mailbox         string    `json:"mailbox"` // whom to sign in as
	Status          string    `json:"status"`  // pending, connected, failed
	UserCode        string    `json:"user_code,omitempty"`
	VerificationURI string    `json:"verification_uri,omitempty"`
	Message         string    `json:"message,omitempty"`
	Expires         time.Time `json:"expires,omitzero"`
	SignedInAs      string    `json:"signed_in_as,omitempty"`
	Warning         string    `json:"warning,omitempty"` // signed in as someone else than the mailbox
	Error           string    `json:"error,omitempty"`
}

// StartDeviceSignIn starts a device-code sign-in for account (or returns
// the one still pending) and polls for it in the background until it is
// done, declined or expired. It returns once Microsoft has issued the code.
func (m *Manager) StartDeviceSignIn(name string) (DeviceSignIn, error) {
	a, err := m.account(name)
	if err != nil {
		return DeviceSignIn{}, err
	}
	if !a.delegated() {
		return DeviceSignIn{}, errors.New("account " + name + " signs in app-only (" + a.Flow + ") and needs no sign-in")
	}
	if a.google() {
		return DeviceSignIn{}, errors.New("account " + name + " is a Google account: Google's device flow does not allow the Gmail scope — use Connect")
	}
	m.pendMu.Lock()
	if d, ok := m.devices[name]; ok && d.Status == "pending" && m.opts.Now().Before(d.Expires) {
		m.pendMu.Unlock()
		return *d, nil
	}
	m.pendMu.Unlock()

	shown := make(chan DeviceCode, 1)
	failed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute) // device codes live 15 min
		defer cancel()
		upn, err := m.ConnectDevice(ctx, name, func(dc DeviceCode) {
			m.pendMu.Lock()
			m.devices[name] = &DeviceSignIn{Account: name, Mailbox: a.Mailbox, Status: "pending", UserCode: dc.UserCode,
				VerificationURI: dc.VerificationURI, Message: dc.Message, Expires: dc.Expires}
			m.pendMu.Unlock()
			shown <- dc
		})
		m.pendMu.Lock()
		defer m.pendMu.Unlock()
		d := m.devices[name]
		if d == nil { // failed before a code was issued
			failed <- err
			return
		}
		if err != nil {
			d.Status, d.Error = "failed", err.Error()
			return
		}
		d.Status, d.SignedInAs, d.Warning = "connected", upn, WrongUser(upn, a.Mailbox)
	}()
	select {
	case <-shown:
		d, _ := m.DeviceSignInStatus(name)
		return d, nil
	case err := <-failed:
		return DeviceSignIn{}, err
	case <-time.After(30 * time.Second):
		return DeviceSignIn{}, errors.New("no device code from Microsoft within 30 s; try again")
	}
}

// DeviceSignInStatus returns the latest device-code sign-in of account.
func (m *Manager) DeviceSignInStatus(name string) (DeviceSignIn, bool) {
	m.pendMu.Lock()
	defer m.pendMu.Unlock()
	d, ok := m.devices[name]
	if !ok {
		return DeviceSignIn{Account: name}, false
	}
	return *d, true
}
