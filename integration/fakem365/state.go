package fakem365

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Options start a fake Microsoft 365 the way `oauthrelay fake-m365` does:
// fixed addresses, state kept in a folder, each accepted message reported.
type Options struct {
	EntraAddr string // host:port; "" = 127.0.0.1 with a random port
	SMTPAddr  string
	IMAPAddr  string
	POP3Addr  string
	// StateDir, when set, keeps the CA and the grants (refresh and access
	// tokens) in files there, so a restarted fake still trusts the relay's
	// tokens and its certificate still matches the relay's ca_file.
	StateDir string
	// OnMessage is called for every message the fake SMTP server accepts.
	OnMessage func(Message)
}

// StartWith starts the fakes as o says. Close stops them.
func StartWith(o Options) (*M365, error) {
	ca, err := loadOrNewCA(o.StateDir)
	if err != nil {
		return nil, err
	}
	entra, err := newEntraAt(o.EntraAddr)
	if err != nil {
		return nil, err
	}
	if o.StateDir != "" {
		if err := entra.persistIn(filepath.Join(o.StateDir, "entra.json")); err != nil {
			entra.Close()
			return nil, err
		}
	}
	s, err := newSMTPAt(entra, ca, o.SMTPAddr)
	if err != nil {
		entra.Close()
		return nil, err
	}
	s.onMessage = o.OnMessage
	mail := newMailstore()
	s.deliver = func(msg Message) {
		for _, rcpt := range msg.To {
			mail.Deliver(rcpt, msg.Data)
		}
	}
	im, err := newIMAPAt(entra, ca, mail, o.IMAPAddr)
	if err != nil {
		s.Close()
		entra.Close()
		return nil, err
	}
	pop, err := newPOP3At(entra, ca, mail, o.POP3Addr)
	if err != nil {
		im.Close()
		s.Close()
		entra.Close()
		return nil, err
	}
	return &M365{Entra: entra, SMTP: s, IMAP: im, POP3: pop, Mail: mail, CA: ca}, nil
}

type caFile struct {
	CACert, ServerCert, ServerKey []byte
}

// loadOrNewCA reads dir/ca.json, or makes a CA and writes it there. A
// stored CA is made anew when its certificate has expired.
func loadOrNewCA(dir string) (*CA, error) {
	if dir == "" {
		return NewCA()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "ca.json")
	if b, err := os.ReadFile(path); err == nil {
		var f caFile
		if json.Unmarshal(b, &f) == nil {
			if ca, err := caFrom(f); err == nil {
				return ca, nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	key, err := x509.MarshalECPrivateKey(ca.Server.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(caFile{CACert: ca.Server.Certificate[1], ServerCert: ca.Server.Certificate[0], ServerKey: key})
	return ca, os.WriteFile(path, b, 0o600)
}

func caFrom(f caFile) (*CA, error) {
	caCert, err := x509.ParseCertificate(f.CACert)
	if err != nil {
		return nil, err
	}
	if time.Now().After(caCert.NotAfter) {
		return nil, errors.New("expired")
	}
	key, err := x509.ParseECPrivateKey(f.ServerKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &CA{PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.CACert}), Pool: pool,
		Server: tls.Certificate{Certificate: [][]byte{f.ServerCert, f.CACert}, PrivateKey: key}}, nil
}

// entraState is what a restarted fake Entra ID needs to honour the tokens
// it issued before.
type entraState struct {
	Refresh map[string]refreshState `json:"refresh"`
	Access  map[string]AccessGrant  `json:"access"`
}

type refreshState struct {
	ClientID, Scope, UPN string
	Revoked              bool
}

// persistIn loads e's grants from path and saves them there after every
// change (e.save, under e.mu).
func (e *Entra) persistIn(path string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.statePath = path
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st entraState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil // unreadable: start afresh
	}
	for t, g := range st.Refresh {
		e.refresh[t] = &refreshGrant{clientID: g.ClientID, scope: g.Scope, upn: g.UPN, revoked: g.Revoked}
		e.issued = append(e.issued, t)
	}
	for t, g := range st.Access {
		g := g
		e.access[t] = &g
		e.issued = append(e.issued, t)
	}
	return nil
}

// save writes the grants if e keeps state; caller holds e.mu.
func (e *Entra) save() {
	if e.statePath == "" {
		return
	}
	st := entraState{Refresh: map[string]refreshState{}, Access: map[string]AccessGrant{}}
	for t, g := range e.refresh {
		st.Refresh[t] = refreshState{ClientID: g.clientID, Scope: g.scope, UPN: g.upn, Revoked: g.revoked}
	}
	now := e.now()
	for t, g := range e.access {
		if now.Before(g.Expires) {
			st.Access[t] = *g
		}
	}
	b, _ := json.Marshal(st)
	tmp := e.statePath + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, e.statePath)
	}
}
