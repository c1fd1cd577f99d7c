package queue

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The store's files (store*.go) are the only ones that touch the disk;
// this one holds the log's appends and a message's operations on it.
//
// Live messages are kept in an append-only log of segments (log/*.log).
// Each record is one of: a new message (its meta and, when small, its body),
// a meta update, or a removal. A record counts once an fdatasync of its
// segment that began after it was written has finished; concurrent writers
// share those fdatasyncs (group commit), so 20 writers cost about one
// fdatasync, not 20 file creations. Bodies larger than inlineMax are
// streamed to tmp/, fsynced and renamed into msg/ before their record is
// written. Finished messages with failures are moved out of the log into
// failed/ as a pair of plain files.
//
// Why a log: on ext4 creating, fsyncing and later freeing a file costs about
// a millisecond of kernel time, an append and fdatasync about a twentieth of
// that (README, Performance). The log holds a message's whole life, so a
// delivery (attempt record, then removal) creates no files either.
//
// Segments are deleted oldest first, and only when no live message has its
// latest record or its body in them: a removal record is never deleted
// before the records it cancels. When more than half of the closed
// segments is garbage, the live messages of the oldest are copied forward
// (compaction), so a few long-deferred messages cannot pin the log.

// ErrDiskTrouble wraps a failed write; the listener answers 452 4.3.1.
var ErrDiskTrouble = errors.New("spool write failed")

const (
	dirTmp     = "tmp"
	dirMsg     = "msg"
	dirLog     = "log"
	dirFailed  = "failed"
	dirCorrupt = "corrupt"

	// Folders of the earlier file-per-message layout; converted at open.
	legacyMeta  = "meta"
	legacySpare = "spare"
)

// Crash points reported to a store's step hook, in the order Enqueue passes
// them. The body steps happen only for bodies stored in msg/.
const (
	stepBodyWritten   = "body-written"   // msg/ body written to tmp/
	stepBodyStored    = "body-stored"    // fsynced, renamed into msg/, folder fsynced
	stepRecordWritten = "record-written" // the log record is written, not yet synced
	stepRecordSynced  = "record-synced"  // durable: Enqueue returns next
)

const (
	defaultInlineMax  = 128 << 10
	defaultSegmentMax = 16 << 20
	// defaultReserve is kept preallocated in spool/reserve and released
	// when the disk fills, so recovery, attempt and removal records can
	// still be written and the mail that would free the space can leave.
	// 8 MiB holds the records of some 15,000 deliveries.
	defaultReserve = 8 << 20
)

type store struct {
	dir       string
	step      func(string) // test hook between write steps; nil in production
	log       *slog.Logger
	inlineMax int
	segMax    int64
	reserve   int64 // bytes of spool/reserve; 0: none
	// writeFault, set by tests, makes an append write part of its record
	// and fail, as a full disk would.
	writeFault func() error
	// syncFault, set by tests, makes the log's fdatasync fail.
	syncFault func() error

	msgDir, failedDir, logDir *syncer
	logSync                   *syncer // fdatasync of the current segment

	mu     sync.Mutex // guards the fields below; appends happen under it
	cur    *segment
	segs   []*segment // ascending; the last is cur
	locs   map[string]*loc
	broken bool // the last write or sync failed: start a new segment

	// full: a write found the disk full. New mail is refused (452 4.3.1)
	// while state records go on into the space spool/reserve gave back,
	// until the reserve can be laid down again with room to spare.
	full      atomic.Bool
	fullSince time.Time // guarded by mu

	maint     chan struct{}
	closed    chan struct{}
	maintDone chan struct{}
	lock      *os.File // spool/lock, flocked while open

	inlineBufs sync.Pool // *[]byte for bodies kept in the log
	fileBufs   sync.Pool // *bufio.Writer for bodies streamed to msg/
}

type segment struct {
	seq    uint64
	f      *os.File
	format segFormat
	size   int64
	refs   int   // live messages whose latest record or body is here
	live   int64 // bytes of those records
	// poisoned: an fdatasync of it failed. Linux reports such an error
	// once, so a later fdatasync may succeed although earlier writes were
	// lost: no write to it that was not durable before is acknowledged.
	poisoned bool
}

// loc is where a live message's latest record and its body are.
type loc struct {
	metaSeg  uint64
	metaOff  int64
	metaSize int64 // whole record
	inline   bool  // body in the log (else msg/<id>.eml)
	bodySeg  uint64
	bodyOff  int64
	bodyLen  int64
}

// newLoc is where a message stands after a record of type typ, recLen
// bytes long, written at off in segment seq: a recNew record holds the
// body in its last bodyLen bytes; a recMeta record keeps prev's body (a
// msg/ file when prev is nil or has none).
func newLoc(seq uint64, off, recLen int64, typ byte, bodyLen int64, prev *loc) *loc {
	l := &loc{metaSeg: seq, metaOff: off, metaSize: recLen}
	switch {
	case typ == recNew:
		l.metaSize = recLen - bodyLen
		l.inline, l.bodySeg, l.bodyOff, l.bodyLen = true, seq, off+recLen-bodyLen, bodyLen
	case prev != nil && prev.inline:
		l.inline, l.bodySeg, l.bodyOff, l.bodyLen = true, prev.bodySeg, prev.bodyOff, prev.bodyLen
	}
	return l
}

func openStore(dir string, step func(string), log *slog.Logger) (*store, error) {
	for _, d := range []string{"", dirTmp, dirMsg, dirLog, dirFailed, dirCorrupt} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("queue: spool.dir %s: %w", dir, err)
		}
	}
	lock, err := lockSpool(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("queue: spool.dir %s is in use by another oauthrelay (only one may run on a spool; stop it or give this one its own spool.dir): %w", dir, err)
	}
	s := &store{
		dir: dir, step: step, log: log, lock: lock,
		inlineMax: defaultInlineMax, segMax: defaultSegmentMax, reserve: defaultReserve,
		msgDir:    newDirSyncer(filepath.Join(dir, dirMsg)),
		failedDir: newDirSyncer(filepath.Join(dir, dirFailed)),
		logDir:    newDirSyncer(filepath.Join(dir, dirLog)),
		locs:      map[string]*loc{},
		maint:     make(chan struct{}, 1),
		closed:    make(chan struct{}),
		maintDone: make(chan struct{}),
	}
	s.logSync = &syncer{do: s.syncCurrent}
	s.logSync.cond = sync.NewCond(&s.logSync.mu)
	return s, nil
}

func (s *store) path(sub, id, ext string) string {
	return filepath.Join(s.dir, sub, id+ext)
}

func (s *store) segPath(seq uint64) string {
	return filepath.Join(s.dir, dirLog, fmt.Sprintf("%016x.log", seq))
}

func (s *store) hook(step string) {
	if s.step != nil {
		s.step(step)
	}
}

// close stops maintenance and closes the segments. Called by Queue.Close
// once no delivery is running.
func (s *store) close() {
	select {
	case <-s.closed:
		return
	default:
	}
	close(s.closed)
	<-s.maintDone
	s.abort()
}

// abort closes the segments and releases the spool's flock: the end of
// close, and all there is to undo when recoverSpool fails.
func (s *store) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		g.f.Close()
	}
	s.segs, s.cur = nil, nil
	s.lock.Close()
}

// logBytes is the size of the log segments.
func (s *store) logBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, g := range s.segs {
		n += g.size
	}
	return n
}

// encodeMeta encodes a meta for a record; a meta recovery would refuse is
// an error here instead.
func encodeMeta(m *Meta) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("queue: refusing to write an invalid meta: %w", err)
	}
	return json.Marshal(m)
}

// appendLocked writes rec at the end of the current segment (a new one if
// it is full or a write failed) and returns the segment and offset. The
// record is not durable until s.logSync.sync() returns. Caller holds s.mu.
//
// A record longer than recovery reads is refused (ErrRecordTooLarge). New
// mail (newMail) is refused while the disk is full; any other record that
// meets a full disk releases spool/reserve and is written into that space.
func (s *store) appendLocked(rec []byte, newMail bool) (*segment, int64, error) {
	if len(rec)-recHeader+1 > recMax {
		return nil, 0, ErrRecordTooLarge
	}
	if newMail && s.full.Load() {
		return nil, 0, ErrDiskFull
	}
	for try := 0; ; try++ {
		g, off, err := s.writeLocked(rec)
		if err == nil {
			return g, off, nil
		}
		if !isNoSpace(err) {
			return nil, 0, diskErr(err)
		}
		released := s.diskFullLocked(err)
		if released {
			// Turn the reserve's space into a preallocated segment at
			// once, before another program takes it: state records
			// need it, even after a restart on a disk still full.
			s.rotateLocked()
		}
		if newMail || !released || try > 0 {
			return nil, 0, fmt.Errorf("%w: %v", ErrDiskFull, err)
		}
	}
}

func (s *store) writeLocked(rec []byte) (*segment, int64, error) {
	if s.cur == nil || s.broken || s.cur.size+int64(len(rec)) > s.segMax && s.cur.size > int64(s.cur.format.start) {
		select {
		case <-s.closed:
			return nil, 0, errors.New("queue closed")
		default:
		}
		if err := s.rotateLocked(); err != nil && (s.cur == nil || s.cur.poisoned || s.broken || s.cur.format.v1 || !isNoSpace(err)) {
			return nil, 0, err
		}
		// No room for a new segment: the current one takes the record.
	}
	g := s.cur
	off := g.size
	if !g.format.v1 {
		sealRecord(rec, g.format.nonce)
	}
	var err error
	if s.writeFault != nil {
		if err = s.writeFault(); err != nil {
			g.f.WriteAt(rec[:len(rec)/2], off) // the torn write a full disk leaves
		}
	}
	if err == nil {
		_, err = g.f.WriteAt(rec, off)
	}
	if err != nil {
		// Cut the torn record off so later records stay readable; if that
		// fails too, later records go to a new segment.
		if g.f.Truncate(off) != nil {
			s.broken = true
		}
		return nil, 0, err
	}
	g.size += int64(len(rec))
	return g, off, nil
}

// rotateLocked makes the current segment durable and starts a new one.
func (s *store) rotateLocked() error {
	seq := uint64(1)
	if s.cur != nil {
		if err := fdatasync(s.cur.f); err != nil {
			s.cur.poisoned = true // its waiting writers fail; new ones go to the new segment
		}
		seq = s.cur.seq + 1
	}
	f, err := os.OpenFile(s.segPath(seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	nonce := make([]byte, segNonceLen)
	rand.Read(nonce)
	if _, err := f.Write(segmentHeader(nonce)); err != nil {
		f.Close()
		os.Remove(s.segPath(seq))
		return err
	}
	// Allocate the segment's blocks now (its size stays as written), so
	// appends to it never meet a full disk: that can only happen here, at
	// rotation, where spool/reserve is given back.
	for n := s.segMax; n >= 64<<10; n /= 4 {
		if err := preallocKeepSize(f, n); err == nil || !isNoSpace(err) {
			break
		}
	}
	// The new name must be durable before any record in it is acknowledged.
	if err := s.logDir.sync(); err != nil {
		f.Close()
		os.Remove(s.segPath(seq))
		return err
	}
	g := &segment{seq: seq, f: f, size: int64(segHeader), format: formatV2(nonce)}
	s.segs = append(s.segs, g)
	s.cur = g
	s.broken = false
	s.kickMaintenance()
	return nil
}

// syncCurrent is logSync's work: fdatasync the current segment. Records in
// earlier segments were made durable when their segment was closed.
func (s *store) syncCurrent() error {
	s.mu.Lock()
	g := s.cur
	s.mu.Unlock()
	if g == nil {
		return fmt.Errorf("queue closed")
	}
	err := fdatasync(g.f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncFault != nil && err == nil {
		err = s.syncFault()
	}
	if err != nil {
		if g != s.cur {
			// Rotated meanwhile: the rotation fdatasynced g (or poisoned
			// it), and g may be closed and deleted by now. Records written
			// since are in the new segment, for a later sync.
			return nil
		}
		g.poisoned = true
		s.broken = true // later records go to a new segment
	}
	return err
}

// commit waits until a record written to g is durable (group commit).
func (s *store) commit(g *segment) error {
	err := s.logSync.sync()
	s.mu.Lock()
	if err == nil && g.poisoned {
		err = errors.New("an earlier fdatasync of the log failed")
	}
	s.mu.Unlock()
	if err != nil {
		return diskErr(err)
	}
	return nil
}

func (s *store) segment(seq uint64) *segment {
	i, ok := slices.BinarySearchFunc(s.segs, seq, func(g *segment, seq uint64) int {
		switch {
		case g.seq < seq:
			return -1
		case g.seq > seq:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return s.segs[i]
}

// setLocLocked records id's new location and moves segment references.
func (s *store) setLocLocked(id string, l *loc) {
	s.dropLocLocked(id)
	s.locs[id] = l
	if g := s.segment(l.metaSeg); g != nil {
		g.refs++
		g.live += l.metaSize
	}
	if l.inline {
		if g := s.segment(l.bodySeg); g != nil {
			g.refs++
			g.live += l.bodyLen
		}
	}
}

func (s *store) dropLocLocked(id string) {
	l := s.locs[id]
	if l == nil {
		return
	}
	delete(s.locs, id)
	release := func(seq uint64, n int64) {
		if g := s.segment(seq); g != nil {
			g.refs--
			g.live -= n
			if g.refs == 0 && g != s.cur && g == s.segs[0] {
				s.kickMaintenance()
			}
		}
	}
	release(l.metaSeg, l.metaSize)
	if l.inline {
		release(l.bodySeg, l.bodyLen)
	}
}

// enqueue stores a new message durably and returns only then; the caller
// may acknowledge after that and not before. A body up to inlineMax is read
// into memory and written with its meta as one log record; a larger one is
// streamed into msg/ first. meta(size) builds the meta once the size is
// known.
func (s *store) enqueue(id string, r io.Reader, meta func(size int64) *Meta) (*Meta, error) {
	bp, _ := s.inlineBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	// Most mail fits in 16 KiB; a larger body gets one buffer of
	// inlineMax+1 bytes, so memory is at most that per session.
	limit := s.inlineMax + 1
	b := (*bp)[:0]
	if cap(b) < min(16<<10, limit) {
		b = make([]byte, 0, min(16<<10, limit))
	}
	defer func() { *bp = b[:0]; s.inlineBufs.Put(bp) }() // after the body is written
	for {
		if len(b) >= limit {
			return s.enqueueFile(id, io.MultiReader(bytes.NewReader(b), r), meta)
		}
		if len(b) == cap(b) {
			b = append(make([]byte, 0, limit), b...)
		}
		n, err := r.Read(b[len(b):min(cap(b), limit)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return s.enqueueInline(id, b, meta)
		}
		if err != nil {
			return nil, readErr{err}
		}
	}
}

func (s *store) enqueueInline(id string, body []byte, meta func(int64) *Meta) (*Meta, error) {
	m := meta(int64(len(body)))
	mb, err := encodeMeta(m)
	if err != nil {
		return nil, err
	}
	rec := newRecord(mb, body)
	s.mu.Lock()
	g, off, err := s.appendLocked(rec, true)
	if err == nil {
		s.setLocLocked(id, newLoc(g.seq, off, int64(len(rec)), recNew, int64(len(body)), nil))
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.hook(stepRecordWritten)
	if err := s.commit(g); err != nil {
		// Unacknowledged: cancel it so it is not delivered after a restart
		// either (best effort; the client will send it again).
		s.cancel(id)
		return nil, err
	}
	s.hook(stepRecordSynced)
	return m, nil
}

// enqueueFile streams a large body to tmp/, fsyncs and renames it into
// msg/, fsyncs msg/, then commits its meta record.
func (s *store) enqueueFile(id string, r io.Reader, meta func(int64) *Meta) (*Meta, error) {
	tmp := s.path(dirTmp, id, ".eml")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, diskErr(err)
	}
	w, _ := s.fileBufs.Get().(*bufio.Writer)
	if w == nil {
		w = bufio.NewWriterSize(nil, 64<<10)
	}
	w.Reset(f)
	n, err := io.Copy(w, errReader{r})
	if err == nil {
		err = w.Flush()
	}
	w.Reset(nil)
	s.fileBufs.Put(w)
	if err != nil {
		f.Close()
		os.Remove(tmp)
		if isReadErr(err) {
			return nil, err // the client's side failed, not the disk
		}
		return nil, diskErr(err)
	}
	s.hook(stepBodyWritten)
	body := s.path(dirMsg, id, ".eml")
	if err := syncClose(f); err != nil {
		os.Remove(tmp)
		return nil, diskErr(err)
	}
	if err := os.Rename(tmp, body); err != nil {
		os.Remove(tmp)
		return nil, diskErr(err)
	}
	if err := s.msgDir.sync(); err != nil {
		os.Remove(body)
		return nil, diskErr(err)
	}
	s.hook(stepBodyStored)
	m := meta(n)
	if err := s.commitMeta(m); err != nil {
		return nil, err
	}
	return m, nil
}

// commitMeta writes the first record of a message whose body is durable in
// msg/ (a large enqueue, a requeue): the commit point.
func (s *store) commitMeta(m *Meta) error {
	err := s.appendMeta(m, true, func() { s.hook(stepRecordWritten) })
	if err != nil {
		s.cancel(m.ID)
		os.Remove(s.path(dirMsg, m.ID, ".eml"))
		return err
	}
	s.hook(stepRecordSynced)
	return nil
}

// writeMeta durably records a live message's new state.
func (s *store) writeMeta(m *Meta) error {
	return s.appendMeta(m, false, nil)
}

func (s *store) appendMeta(m *Meta, newMail bool, written func()) error {
	mb, err := encodeMeta(m)
	if err != nil {
		return err
	}
	rec := encodeRecord(recMeta, mb)
	s.mu.Lock()
	g, off, err := s.appendLocked(rec, newMail)
	if err == nil {
		s.setLocLocked(m.ID, newLoc(g.seq, off, int64(len(rec)), recMeta, 0, s.locs[m.ID]))
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if written != nil {
		written()
	}
	return s.commit(g)
}

// cancel appends a removal for a message whose commit failed, without
// waiting for it to be durable.
func (s *store) cancel(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocLocked(id)
	s.appendLocked(encodeRecord(recDone, []byte(id)), false)
}

// removeLive deletes a live message: a durable removal record, then its
// msg/ body if it has one.
func (s *store) removeLive(id string) error {
	s.mu.Lock()
	l := s.locs[id]
	g, _, err := s.appendLocked(encodeRecord(recDone, []byte(id)), false)
	if err == nil {
		s.dropLocLocked(id)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.commit(g); err != nil {
		return err
	}
	if l == nil || !l.inline {
		os.Remove(s.path(dirMsg, id, ".eml"))
	}
	return nil
}

// moveToFailed moves a finished message to failed/: its body to
// failed/<id>.eml (a hard link, or a copy out of the log), then
// failed/<id>.json, then a removal record. A crash in between is finished
// by recoverSpool: a live message with a failed/<id>.json is removed from
// the log; a failed/ body without its json is removed.
func (s *store) moveToFailed(m *Meta) error {
	fbody := s.path(dirFailed, m.ID, ".eml")
	os.Remove(fbody)
	s.mu.Lock()
	l := s.locs[m.ID]
	s.mu.Unlock()
	if l != nil && l.inline {
		r, err := s.openBody(m.ID)
		if err != nil {
			return diskErr(err)
		}
		err = s.writeFile(fbody, r)
		r.Close()
		if err != nil {
			return err
		}
	} else if err := os.Link(s.path(dirMsg, m.ID, ".eml"), fbody); err != nil {
		return diskErr(err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := s.writeFile(s.path(dirFailed, m.ID, ".json"), bytes.NewReader(b)); err != nil {
		os.Remove(fbody)
		return err
	}
	if err := s.failedDir.sync(); err != nil {
		return diskErr(err)
	}
	return s.removeLive(m.ID)
}

// writeFile writes r to path durably except for the folder fsync: tmp/,
// fsync, rename.
func (s *store) writeFile(path string, r io.Reader) error {
	tmp := filepath.Join(s.dir, dirTmp, filepath.Base(filepath.Dir(path))+"-"+filepath.Base(path))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return diskErr(err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return diskErr(err)
	}
	return nil
}

// requeue makes a failed message live again under a new ID: link the body
// into msg/, commit the new meta (which names the old ID), then remove the
// failed copy. A crash before the commit leaves an orphan body (removed at
// start) and the failed copy intact; after it, start-up removes the failed copy.
func (s *store) requeue(oldID string, m *Meta) error {
	body := s.path(dirMsg, m.ID, ".eml")
	if err := os.Link(s.path(dirFailed, oldID, ".eml"), body); err != nil {
		return diskErr(err)
	}
	if err := s.msgDir.sync(); err != nil {
		os.Remove(body)
		return diskErr(err)
	}
	if err := s.commitMeta(m); err != nil {
		return err
	}
	return s.removeFailed(oldID)
}

func (s *store) removeFailed(id string) error {
	if err := os.Remove(s.path(dirFailed, id, ".json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return diskErr(err)
	}
	os.Remove(s.path(dirFailed, id, ".eml"))
	return s.failedDir.sync()
}

type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (s sectionFile) Close() error { return s.f.Close() }

// openBody opens a live message's body for reading. A body in the log is
// read through its own descriptor, so compaction may delete the segment
// meanwhile.
func (s *store) openBody(id string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locs[id]
	if l == nil || !l.inline {
		return os.Open(s.path(dirMsg, id, ".eml"))
	}
	f, err := os.Open(s.segPath(l.bodySeg))
	if err != nil {
		return nil, err
	}
	return sectionFile{io.NewSectionReader(f, l.bodyOff, l.bodyLen), f}, nil
}

// openFailedBody opens a failed message's body for reading.
func (s *store) openFailedBody(id string) (*os.File, error) {
	return os.Open(s.path(dirFailed, id, ".eml"))
}
