package queue

// Maintenance: deleting segments nothing live is in, and compacting the
// log when a few long-waiting messages pin old segments.

import (
	"os"
	"time"
)

func (s *store) kickMaintenance() {
	select {
	case s.maint <- struct{}{}:
	default:
	}
}

func (s *store) maintain() {
	defer close(s.maintDone)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-tick.C:
			if s.full.Load() {
				s.layReserve() // leaves the disk-full state when there is room
			}
		case <-s.maint:
			s.collect()
			for s.compactOldest() {
				s.collect()
			}
		}
	}
}

// collect deletes the oldest closed segments while nothing live is in them.
// References move when a record is appended, before it is durable, so it
// first waits for an fdatasync: the records that moved them away (a newer
// state, a copy made by compaction) must be durable before the old ones go.
func (s *store) collect() {
	s.mu.Lock()
	idle := len(s.segs) > 1 && s.segs[0].refs == 0
	s.mu.Unlock()
	if !idle || s.logSync.sync() != nil {
		return
	}
	s.mu.Lock()
	var gone []*segment
	for len(s.segs) > 1 && s.segs[0].refs == 0 {
		gone = append(gone, s.segs[0])
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	for _, g := range gone {
		g.f.Close()
		os.Remove(s.segPath(g.seq))
	}
	// Deletions are durable in order, so a later segment (holding removal
	// records) is never gone while an earlier one it cancels is back.
	s.logDir.sync()
}

// compactOldest copies the live messages of the oldest closed segment
// forward when more than half of all closed segments is garbage, so the
// segment (and the garbage after it) can be deleted. It reports whether it
// moved anything.
func (s *store) compactOldest() bool {
	s.mu.Lock()
	if len(s.segs) < 3 {
		s.mu.Unlock()
		return false
	}
	var size, live int64
	for _, g := range s.segs[:len(s.segs)-1] {
		size += g.size
		live += g.live
	}
	old := s.segs[0]
	if live*2 > size || old.refs == 0 {
		s.mu.Unlock()
		return false
	}
	var ids []string
	for id, l := range s.locs {
		if l.metaSeg == old.seq || l.inline && l.bodySeg == old.seq {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	moved := 0
	for _, id := range ids {
		select {
		case <-s.closed:
			return false
		default:
		}
		if err := s.relocate(id, old.seq); err != nil {
			s.log.Error("queue: log compaction failed; will try again later", "id", id, "error", err.Error())
			return false
		}
		moved++
	}
	if err := s.logSync.sync(); err != nil {
		s.log.Error("queue: log compaction failed; will try again later", "error", err.Error())
		return false
	}
	s.log.Debug("queue: compacted a log segment", "segment", old.seq, "moved", moved)
	return moved > 0
}

// relocate rewrites id's latest state (and inline body) at the end of the
// log. It holds s.mu throughout, so no update of id can slip in between.
func (s *store) relocate(id string, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locs[id]
	if l == nil || (l.metaSeg != seq && !(l.inline && l.bodySeg == seq)) {
		return nil // gone or already moved
	}
	mg, bg := s.segment(l.metaSeg), s.segment(l.bodySeg)
	hl := int64(mg.format.hdrLen)
	hdr := make([]byte, hl)
	if _, err := mg.f.ReadAt(hdr, l.metaOff); err != nil {
		return err
	}
	payload := make([]byte, l.metaSize-hl)
	if _, err := mg.f.ReadAt(payload, l.metaOff+hl); err != nil {
		return err
	}
	mb := payload
	if mg.format.typeAt(hdr) == recNew {
		mb, _, _ = splitNew(payload) // checked when written or scanned
	}
	typ, rec := byte(recMeta), []byte(nil)
	if l.inline {
		body := make([]byte, l.bodyLen)
		if _, err := bg.f.ReadAt(body, l.bodyOff); err != nil {
			return err
		}
		typ, rec = recNew, newRecord(mb, body)
	} else {
		rec = encodeRecord(recMeta, mb)
	}
	g, off, err := s.appendLocked(rec, false)
	if err != nil {
		return err
	}
	s.setLocLocked(id, newLoc(g.seq, off, int64(len(rec)), typ, l.bodyLen, nil))
	return nil
}
