package fakem365

import (
	"bytes"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Mailstore holds the INBOX of every mailbox the fake serves over IMAP and
// POP3: what its SMTP side accepted for a recipient, and what a test
// delivered. Both protocols see the same INBOX, as on Exchange Online: a
// message POP3 deletes is gone from IMAP too. Mailboxes are made on first
// use, named by lower-cased address.
type Mailstore struct {
	mu    sync.Mutex
	boxes map[string]*mailboxState
}

type mailboxState struct {
	user *imapmemserver.User
	// data keeps each message's bytes by IMAP UID, for POP3 (imapmemserver
	// does not hand them out).
	data map[imap.UID][]byte
	// open counts the authenticated IMAP and POP3 connections now open;
	// peak the most at once. Key "" counts both protocols.
	open, peak map[string]int // protocol -> count
}

// Protocol names for connection counts.
const (
	ProtoIMAP = "imap"
	ProtoPOP3 = "pop3"
)

func newMailstore() *Mailstore { return &Mailstore{boxes: map[string]*mailboxState{}} }

// box returns the mailbox of address, making it (with an INBOX) if new.
// Caller holds s.mu.
func (s *Mailstore) box(address string) *mailboxState {
	key := strings.ToLower(address)
	b := s.boxes[key]
	if b == nil {
		b = &mailboxState{user: imapmemserver.NewUser(key, ""), data: map[imap.UID][]byte{},
			open: map[string]int{}, peak: map[string]int{}}
		b.user.Create("INBOX", nil)
		s.boxes[key] = b
	}
	return b
}

// Deliver puts data, byte for byte, into the INBOX of address. Sessions
// idling on that INBOX see a new EXISTS.
func (s *Mailstore) Deliver(address string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(address)
	data = bytes.Clone(data)
	ad, err := b.user.Append("INBOX", literal{bytes.NewReader(data)}, &imap.AppendOptions{Time: time.Now()})
	if err == nil {
		b.data[ad.UID] = data
	}
}

// Messages returns the messages now in the INBOX of address, oldest first.
func (s *Mailstore) Messages(address string) [][]byte {
	var out [][]byte
	for _, m := range s.inbox(address) {
		out = append(out, m.data)
	}
	return out
}

type storedMessage struct {
	uid  imap.UID
	data []byte
}

// inbox lists the INBOX of address as it is now.
func (s *Mailstore) inbox(address string) []storedMessage {
	s.mu.Lock()
	b := s.box(address)
	s.mu.Unlock()
	sess := imapmemserver.NewUserSession(b.user)
	defer sess.Close()
	if _, err := sess.Select("INBOX", &imap.SelectOptions{ReadOnly: true}); err != nil {
		return nil
	}
	found, err := sess.Search(imapserver.NumKindUID, &imap.SearchCriteria{}, &imap.SearchOptions{})
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storedMessage
	for _, uid := range found.AllUIDs() {
		if d, ok := b.data[uid]; ok {
			out = append(out, storedMessage{uid: uid, data: d})
		}
	}
	return out
}

// remove expunges the messages uids from the INBOX of address (POP3's
// UPDATE state). Sessions that selected the INBOX see EXPUNGE.
func (s *Mailstore) remove(address string, uids []imap.UID) {
	if len(uids) == 0 {
		return
	}
	s.mu.Lock()
	b := s.box(address)
	s.mu.Unlock()
	sess := imapmemserver.NewUserSession(b.user)
	defer sess.Close()
	if _, err := sess.Select("INBOX", nil); err != nil {
		return
	}
	set := imap.UIDSetNum(uids...)
	// Silent: no FETCH response is written, so no writer is needed.
	if err := sess.Store(nil, set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil); err != nil {
		return
	}
	sess.Expunge(nil, &set)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, uid := range uids {
		delete(b.data, uid)
	}
}

// opened counts a connection of proto authenticated as address; the
// returned func counts it closed.
func (s *Mailstore) opened(address, proto string) (closed func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(address)
	for _, k := range []string{proto, ""} {
		b.open[k]++
		b.peak[k] = max(b.peak[k], b.open[k])
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			b.open[proto]--
			b.open[""]--
		})
	}
}

// Connections reports how many authenticated connections of proto
// (ProtoIMAP, ProtoPOP3; "" for both) address has open now, and the most
// it had open at once.
func (s *Mailstore) Connections(address, proto string) (open, peak int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(address)
	return b.open[proto], b.peak[proto]
}

// literal is an imap.LiteralReader over a byte slice.
type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }
