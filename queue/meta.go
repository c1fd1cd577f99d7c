package queue

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// MetaVersion is the on-disk format of a meta (log records, failed/*.json); bump it on incompatible change.
const MetaVersion = 1

// RcptState is where one recipient stands.
type RcptState string

const (
	StateQueued    RcptState = "queued"    // not attempted yet
	StateInflight  RcptState = "inflight"  // an attempt is running (or was, when the relay stopped)
	StateDelivered RcptState = "delivered" // upstream answered 2xx
	StateDeferred  RcptState = "deferred"  // temporary failure; retried on schedule
	StateFailed    RcptState = "failed"    // permanent failure; the sender is told
)

// Pending reports whether the recipient still needs an attempt.
func (s RcptState) Pending() bool {
	return s == StateQueued || s == StateDeferred || s == StateInflight
}

// Reply is an SMTP reply, or a description in SMTP terms of what went wrong.
type Reply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced,omitempty"` // "5.2.252"
	Text     string `json:"text"`
}

func (r Reply) String() string {
	if r.Enhanced != "" {
		return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
	}
	return fmt.Sprintf("%d %s", r.Code, r.Text)
}

// Recipient is one RCPT TO with its state.
type Recipient struct {
	Addr  string    `json:"addr"`
	State RcptState `json:"state"`
	Last  *Reply    `json:"last,omitempty"`
	// Updated is when State last changed.
	Updated time.Time `json:"updated"`
}

// Envelope is what the listener hands the queue with the message body.
type Envelope struct {
	From       string   // "" for the null sender <>
	To         []string // at least one
	Account    string   // the account the sender routes to
	SMTPUTF8   bool
	EightBit   bool // BODY=8BITMIME
	IsBounce   bool // a DSN we made: never bounced itself
	ClientAddr string
}

// Meta is a message's envelope and state, stored in the spool log (failed/<id>.json once failed).
type Meta struct {
	Version    int         `json:"version"`
	ID         string      `json:"id"`
	From       string      `json:"from"`
	Recipients []Recipient `json:"recipients"`
	Account    string      `json:"account"`
	SMTPUTF8   bool        `json:"smtputf8,omitempty"`
	EightBit   bool        `json:"8bitmime,omitempty"`
	IsBounce   bool        `json:"is_bounce,omitempty"`
	ClientAddr string      `json:"client_addr,omitempty"`
	Size       int64       `json:"size"`
	Arrived    time.Time   `json:"arrived"`
	// AgeFrom is when max age starts counting: Arrived, or the requeue time.
	AgeFrom     time.Time `json:"age_from"`
	Attempts    int       `json:"attempts"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt"`
	// RequeuedFrom is the failed/ message this one was requeued from.
	RequeuedFrom string `json:"requeued_from,omitempty"`
	// Finished is when the message left the live queue (failed/ only).
	Finished time.Time `json:"finished,omitzero"`
	// Bounced records that the sender was sent a DSN.
	Bounced bool `json:"bounced,omitempty"`
}

// Pending returns the recipients that still need an attempt.
func (m *Meta) Pending() []string {
	var out []string
	for _, r := range m.Recipients {
		if r.State.Pending() {
			out = append(out, r.Addr)
		}
	}
	return out
}

func (m *Meta) clone() *Meta {
	c := *m
	c.Recipients = append([]Recipient(nil), m.Recipients...)
	return &c
}

func (m *Meta) validate() error {
	switch {
	case m.Version != MetaVersion:
		return fmt.Errorf("meta format version %d, this build reads %d", m.Version, MetaVersion)
	case !validID(m.ID):
		return fmt.Errorf("bad id %q", m.ID)
	case len(m.Recipients) == 0:
		return fmt.Errorf("no recipients")
	case m.Arrived.IsZero():
		return fmt.Errorf("no arrival time")
	}
	return nil
}

// newID makes a random, time-sortable ID: 12 hex digits of milliseconds
// since the epoch, then 8 random hex digits.
func newID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%012x%08x", now.UnixMilli(), binary.BigEndian.Uint32(b[:]))
}

func validID(id string) bool {
	if len(id) != 20 {
		return false
	}
	return strings.Trim(id, "0123456789abcdef") == ""
}
