package queue

// Recovery: reading the spool back after any stop, clean or not.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func parseMeta(b []byte) (*Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (s *store) readMeta(path string) (*Meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := parseMeta(b)
	if err != nil {
		return nil, err
	}
	if id := strings.TrimSuffix(filepath.Base(path), ".json"); id != m.ID {
		return nil, fmt.Errorf("file name %s does not match id %s", id, m.ID)
	}
	return m, nil
}

// quarantine moves a failed/ (or legacy meta/) message's files to corrupt/,
// never deleting.
func (s *store) quarantine(sub, id string, why error) {
	for _, ext := range []string{".json", ".eml"} {
		from := s.path(sub, id, ext)
		if sub == legacyMeta && ext == ".eml" {
			from = s.path(dirMsg, id, ".eml")
		}
		if _, err := os.Stat(from); err == nil {
			os.Rename(from, s.path(dirCorrupt, id, ext))
		}
	}
	s.log.Error("queue: unreadable message quarantined in corrupt/", "id", id, "from", sub, "error", why.Error())
}

// scanned is what the log says about one live message.
type scanned struct {
	meta *Meta
	loc  loc
}

// scanSegment reads the segment at path and applies its intact records,
// in order, to live. buf is reused between segments. A record whose
// checksum holds but whose meta cannot be read is handed to bad.
func scanSegment(path string, seq uint64, live map[string]*scanned, removed map[string]bool, buf *[]byte, bad func(off int64, raw []byte, why error)) (*segScan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if int64(cap(*buf)) < info.Size() {
		// Room for a full segment and its last record at once, so the
		// buffer is not made again for each slightly larger segment.
		*buf = make([]byte, 0, max(info.Size(), defaultSegmentMax+2*defaultInlineMax))
	}
	data := (*buf)[:info.Size()]
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, err
	}
	*buf = data // the caller may look at the damaged bytes
	return applyRecords(data, seq, live, removed, bad)
}

// applyRecords reads a segment's bytes (scanRecords) and applies its intact
// records, in order, to live. No I/O: FuzzRecover calls it directly.
func applyRecords(data []byte, seq uint64, live map[string]*scanned, removed map[string]bool, bad func(off int64, raw []byte, why error)) (*segScan, error) {
	sc, err := scanRecords(data)
	if err != nil {
		return nil, err
	}
	for _, r := range sc.records {
		off, size := int64(r.off), int64(r.size)
		switch r.typ {
		case recNew, recMeta:
			mb, body := r.payload, []byte(nil)
			if r.typ == recNew {
				var ok bool
				if mb, body, ok = splitNew(r.payload); !ok {
					bad(off, data[r.off:r.off+r.size], errors.New("bad meta length"))
					continue
				}
			}
			m, err := parseMeta(mb)
			if err != nil {
				bad(off, data[r.off:r.off+r.size], err)
				continue
			}
			var prev *loc
			if old := live[m.ID]; old != nil {
				prev = &old.loc
			}
			live[m.ID] = &scanned{meta: m, loc: *newLoc(seq, off, size, r.typ, int64(len(body)), prev)}
		case recDone:
			delete(live, string(r.payload))
			if removed != nil {
				removed[string(r.payload)] = true
			}
		}
	}
	return sc, nil
}

// segments lists log/ in order.
func (s *store) segments() ([]uint64, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, dirLog))
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		seq, err := strconv.ParseUint(name, 16, 64)
		if !ok || err != nil || len(name) != 16 {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// recoverSpool brings the spool to a consistent state after any stop, clean
// or not, opens a new log segment, and returns the live and failed
// messages. Its phases, in order: clear tmp/; read failed/; read the log
// (cutting a torn tail, keeping damage in corrupt/); open the segments and
// start a new one; settle the live messages (finish interrupted moves and
// requeues, quarantine a message whose body is gone); remove orphan files.
func (s *store) recoverSpool() (live, failed []*Meta, err error) {
	s.clearTmp()
	failedByID, fentries, err := s.readFailed()
	if err != nil {
		return nil, nil, err
	}
	seqs, err := s.segments()
	if err != nil {
		return nil, nil, err
	}
	byID, formats, err := s.readLog(seqs)
	if err != nil {
		return nil, nil, err
	}
	if err := s.openSegments(seqs, formats); err != nil {
		return nil, nil, err
	}
	if err := s.importLegacy(byID); err != nil {
		return nil, nil, err
	}
	if live, err = s.settle(byID, failedByID); err != nil {
		return nil, nil, err
	}
	s.removeOrphans(byID, failedByID, fentries)
	for _, m := range failedByID {
		failed = append(failed, m)
	}
	s.collect()
	if err := s.layReserve(); err != nil && !errors.Is(err, ErrDiskFull) {
		s.log.Warn("queue: could not lay down spool/reserve (kept free for deliveries when the disk fills)", "error", err.Error())
	}
	go s.maintain()
	return live, failed, nil
}

// clearTmp empties tmp/: it holds only writes that never committed.
func (s *store) clearTmp() {
	tmps, _ := os.ReadDir(filepath.Join(s.dir, dirTmp))
	for _, e := range tmps {
		os.Remove(filepath.Join(s.dir, dirTmp, e.Name()))
	}
}

// readFailed reads failed/*.json; one that cannot be read is quarantined.
func (s *store) readFailed() (map[string]*Meta, []os.DirEntry, error) {
	failedByID := map[string]*Meta{}
	fentries, err := os.ReadDir(filepath.Join(s.dir, dirFailed))
	if err != nil {
		return nil, nil, err
	}
	for _, e := range fentries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		m, err := s.readMeta(filepath.Join(s.dir, dirFailed, e.Name()))
		if err != nil {
			s.quarantine(dirFailed, id, err)
			continue
		}
		failedByID[id] = m
	}
	return failedByID, fentries, nil
}

// readLog reads every segment in order into the live messages' latest
// state. A torn tail of the last segment is cut off; damage anywhere is
// copied to corrupt/ and logged, and every intact record around it used.
func (s *store) readLog(seqs []uint64) (map[string]*scanned, map[uint64]segFormat, error) {
	byID := map[string]*scanned{}
	var damaged []damagedID
	removed := map[string]bool{} // messages a removal record ended
	defer func() { s.reportDamaged(damaged, byID, removed) }()
	formats := map[uint64]segFormat{}
	var buf []byte
	for i, seq := range seqs {
		path := s.segPath(seq)
		last := i == len(seqs)-1
		sc, err := scanSegment(path, seq, byID, removed, &buf, func(off int64, raw []byte, why error) {
			q := filepath.Join(s.dir, dirCorrupt, fmt.Sprintf("log-%016x-%d.record", seq, off))
			os.WriteFile(q, raw, 0o600)
			s.log.Error("queue: unreadable log record quarantined in corrupt/", "file", q, "error", why.Error())
		})
		if errors.Is(err, errNoSegmentHeader) && last {
			// A crash while the segment was being started.
			s.log.Warn("queue: removed an empty log segment left by a crash", "segment", path)
			os.Remove(path)
			continue
		}
		if err != nil {
			s.copyToCorrupt(path)
			s.log.Error("queue: unreadable log segment; a copy is in corrupt/", "segment", path, "error", err.Error())
			continue
		}
		formats[seq] = sc.format
		if len(sc.damage) > 0 || sc.tail != nil && (!sc.torn || !last) {
			// Damage, not an interrupted append: keep a copy for
			// inspection; every intact record around it was read.
			q := s.copyToCorrupt(path)
			var where []string
			spans := sc.damage
			for _, d := range sc.damage {
				where = append(where, fmt.Sprintf("%s (%d bytes)", d.why, d.to-d.from))
			}
			if sc.tail != nil {
				where = append(where, fmt.Sprintf("%s (%d bytes to the end)", sc.tail.why, sc.tail.to-sc.tail.from))
				spans = append(spans, *sc.tail)
			}
			for _, d := range spans {
				for _, m := range idInRecord.FindAllSubmatch(buf[d.from:d.to], -1) {
					damaged = append(damaged, damagedID{id: string(m[1]), copy: q, off: d.from})
				}
			}
			s.log.Error("queue: damaged log segment; every intact record in it was recovered, a copy is in corrupt/", "segment", path, "copy", q, "damage", strings.Join(where, "; "), "records_read", len(sc.records))
		}
		if sc.tail != nil && last {
			// The tail of the last segment: writes no fdatasync covered
			// (or damaged past use). Cut it off.
			if err := os.Truncate(path, int64(sc.tail.from)); err != nil {
				return nil, nil, err
			}
			if sc.torn {
				s.log.Warn("queue: cut an unacknowledged partial record off the log", "segment", path, "at", sc.tail.from, "reason", sc.tail.why)
			}
		}
	}
	return byID, formats, nil
}

// idInRecord finds a message ID in a record's meta, even in damaged bytes.
var idInRecord = regexp.MustCompile(`"id":"([0-9a-f]{20})"`)

// damagedID is a message named in damaged bytes of the log.
type damagedID struct {
	id   string
	copy string // the segment's copy in corrupt/
	off  int    // where the damage starts
}

// reportDamaged says, for every message named in damaged bytes, whether it
// survived (from an earlier intact record: its newest state may be older,
// so an attempt may be repeated) or was lost, and where its bytes are, so
// an admin knows what damage cost. IDs recognised in damage are a best
// effort: a record damaged in its ID is not named.
func (s *store) reportDamaged(damaged []damagedID, byID map[string]*scanned, removed map[string]bool) {
	seen := map[string]bool{}
	for _, d := range damaged {
		if seen[d.id] {
			continue
		}
		seen[d.id] = true
		if byID[d.id] != nil {
			s.log.Warn("queue: a damaged record named a message that was recovered from an earlier intact record (its newest state may be older: an attempt may be repeated)",
				"id", d.id, "copy", d.copy, "offset", d.off)
			continue
		}
		if removed[d.id] {
			continue // it had left the queue (delivered or removed): nothing lost
		}
		s.log.Error("queue: a message was lost to the damage: no intact record of it is left; its bytes are in the copy in corrupt/",
			"id", d.id, "copy", d.copy, "offset", d.off)
	}
}

// openSegments opens the segments (read-write) and starts a new one, into
// which every run appends. On a full disk the reserve is given back for it;
// failing that, appends go on in the last segment (its tail is clean now).
func (s *store) openSegments(seqs []uint64, formats map[uint64]segFormat) error {
	for _, seq := range seqs {
		f, err := os.OpenFile(s.segPath(seq), os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed by readLog
			}
			return err
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		s.segs = append(s.segs, &segment{seq: seq, f: f, size: info.Size(), format: formats[seq]})
	}
	if len(s.segs) > 0 {
		s.cur = s.segs[len(s.segs)-1]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.rotateLocked()
	if err != nil && isNoSpace(err) {
		s.diskFullLocked(err)
		if err = s.rotateLocked(); err != nil && s.cur != nil && isNoSpace(err) && !s.cur.format.v1 {
			err = nil
		}
	}
	return err
}

// settle makes the log's live messages the queue's, finishing what a crash
// interrupted: a message already in failed/ (moveToFailed) or whose body is
// missing (quarantined) is removed from the log; a requeue that committed
// drops its failed/ original.
func (s *store) settle(byID map[string]*scanned, failedByID map[string]*Meta) ([]*Meta, error) {
	var live []*Meta
	var fixes []string // removals to record
	for id, sc := range byID {
		m := sc.meta
		if _, done := failedByID[id]; done {
			// Crashed in moveToFailed after failed/<id>.json was written.
			fixes = append(fixes, id)
			continue
		}
		if !sc.loc.inline {
			if _, err := os.Stat(s.path(dirMsg, id, ".eml")); err != nil {
				b, _ := json.MarshalIndent(m, "", "  ")
				os.WriteFile(s.path(dirCorrupt, id, ".json"), b, 0o600)
				s.log.Error("queue: message without its body quarantined in corrupt/", "id", id, "error", err.Error())
				fixes = append(fixes, id)
				continue
			}
		}
		if m.RequeuedFrom != "" {
			if _, stale := failedByID[m.RequeuedFrom]; stale {
				s.removeFailed(m.RequeuedFrom) // crashed in requeue after the commit
				delete(failedByID, m.RequeuedFrom)
			}
		}
		s.mu.Lock()
		l := sc.loc
		s.setLocLocked(id, &l)
		s.mu.Unlock()
		live = append(live, m)
	}
	for _, id := range fixes {
		delete(byID, id)
		if err := s.removeLive(id); err != nil {
			return nil, err
		}
	}
	return live, nil
}

// removeOrphans deletes msg/ bodies no live message names (they never
// committed, or were being removed) and failed/ bodies without their json
// (a crash in moveToFailed before the json; the live copy is still there).
func (s *store) removeOrphans(byID map[string]*scanned, failedByID map[string]*Meta, fentries []os.DirEntry) {
	bodies, _ := os.ReadDir(filepath.Join(s.dir, dirMsg))
	for _, e := range bodies {
		id, _ := strings.CutSuffix(e.Name(), ".eml")
		if sc := byID[id]; sc == nil || sc.loc.inline {
			os.Remove(filepath.Join(s.dir, dirMsg, e.Name()))
		}
	}
	for _, e := range fentries {
		id, ok := strings.CutSuffix(e.Name(), ".eml")
		if ok && failedByID[id] == nil {
			os.Remove(filepath.Join(s.dir, dirFailed, e.Name()))
		}
	}
}

// copyToCorrupt keeps a copy of a damaged segment in corrupt/ and returns
// its path.
func (s *store) copyToCorrupt(path string) string {
	q := filepath.Join(s.dir, dirCorrupt, filepath.Base(path))
	if b, err := os.ReadFile(path); err == nil {
		if err := os.WriteFile(q, b, 0o600); err != nil {
			s.log.Error("queue: could not copy a damaged log segment to corrupt/; the segment itself is kept", "segment", path, "error", err.Error())
		}
	}
	return q
}

// importLegacy converts a spool of the earlier layout (meta/<id>.json
// beside msg/<id>.eml, spare/) into log records, then removes meta/ and
// spare/. A meta that cannot be read goes to corrupt/ with its body.
func (s *store) importLegacy(byID map[string]*scanned) error {
	os.RemoveAll(filepath.Join(s.dir, legacySpare))
	mdir := filepath.Join(s.dir, legacyMeta)
	entries, err := os.ReadDir(mdir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var imported []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || byID[id] != nil {
			continue
		}
		m, err := s.readMeta(filepath.Join(mdir, e.Name()))
		if err == nil {
			_, err = os.Stat(s.path(dirMsg, id, ".eml"))
		}
		if err != nil {
			s.quarantine(legacyMeta, id, err)
			continue
		}
		mb, _ := encodeMeta(m)
		rec := encodeRecord(recMeta, mb)
		s.mu.Lock()
		g, off, err := s.appendLocked(rec, false)
		s.mu.Unlock()
		if err != nil {
			return err
		}
		byID[id] = &scanned{meta: m, loc: *newLoc(g.seq, off, int64(len(rec)), recMeta, 0, nil)}
		imported = append(imported, id)
	}
	if err := s.logSync.sync(); err != nil {
		return err
	}
	for _, id := range imported {
		os.Remove(filepath.Join(mdir, id+".json"))
	}
	if err := os.Remove(mdir); err != nil {
		return fmt.Errorf("legacy meta/ not empty after import: %w", err)
	}
	if len(imported) > 0 {
		s.log.Info("queue: converted the spool to the log layout", "messages", len(imported))
	}
	return nil
}
