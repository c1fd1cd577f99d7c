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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// This file is the only one that touches the disk.
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
	StepBodyWritten   = "body-written"   // msg/ body written to tmp/
	StepBodyStored    = "body-stored"    // fsynced, renamed into msg/, folder fsynced
	StepRecordWritten = "record-written" // the log record is written, not yet synced
	StepRecordSynced  = "record-synced"  // durable: Enqueue returns next
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

// ---- records ----

// encodeMeta encodes a meta for a record; a meta recovery would refuse is
// an error here instead.
func encodeMeta(m *Meta) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("queue: refusing to write an invalid meta: %w", err)
	}
	return json.Marshal(m)
}

// ---- appending ----

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
			return nil, 0, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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

// ErrDiskFull: the spool's disk is full. New mail is refused with 452 4.3.1
// until there is room again; queued mail is still delivered.
var ErrDiskFull = fmt.Errorf("%w: the spool's disk is full", ErrDiskTrouble)

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// diskFullLocked enters the disk-full state (logging it once) and releases
// spool/reserve; it reports whether that freed space now. Caller holds s.mu.
func (s *store) diskFullLocked(cause error) bool {
	if !s.full.Swap(true) {
		s.fullSince = time.Now()
		s.log.Error("queue: the spool's disk is full: new mail is refused with 452 4.3.1 until there is room; queued mail is still delivered", "dir", s.dir, "error", cause.Error())
	}
	err := os.Remove(filepath.Join(s.dir, "reserve"))
	if err == nil {
		s.log.Warn("queue: released spool/reserve so deliveries can record their progress", "bytes", s.reserve)
		return true
	}
	return false
}

// DiskFull reports since when the spool's disk has been full.
func (s *store) diskFull() (time.Time, bool) {
	if !s.full.Load() {
		return time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fullSince, true
}

// layReserve makes sure spool/reserve holds s.reserve bytes of allocated
// space. While the disk is full it succeeds only with as much room again to
// spare, and then leaves the disk-full state.
func (s *store) layReserve() error {
	if s.reserve <= 0 {
		if s.full.Load() {
			if free, err := freeSpace(s.dir); err != nil || free < 2*defaultReserve {
				return fmt.Errorf("%w: %d bytes free", ErrDiskFull, free)
			}
			s.leaveFull()
		}
		return nil
	}
	p := filepath.Join(s.dir, "reserve")
	if info, err := os.Stat(p); err == nil && info.Size() >= s.reserve && !s.full.Load() {
		return nil
	}
	if s.full.Load() {
		if free, err := freeSpace(s.dir); err != nil || free < 2*s.reserve {
			return fmt.Errorf("%w: %d bytes free", ErrDiskFull, free)
		}
	}
	tmp := filepath.Join(s.dir, dirTmp, "reserve")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		err = preallocate(f, s.reserve)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		if isNoSpace(err) {
			s.mu.Lock()
			s.diskFullLocked(err)
			s.mu.Unlock()
			return fmt.Errorf("%w: %v", ErrDiskFull, err)
		}
		return fmt.Errorf("%w: spool/reserve: %v", ErrDiskTrouble, err)
	}
	if s.full.Load() {
		s.leaveFull()
	}
	return nil
}

func (s *store) leaveFull() {
	s.mu.Lock()
	since := s.fullSince
	s.mu.Unlock()
	if s.full.Swap(false) {
		s.log.Info("queue: the spool's disk has room again; accepting new mail", "dir", s.dir, "was_full_for", time.Since(since).Round(time.Second).String())
	}
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
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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

// ---- operations ----

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
	s.hook(StepRecordWritten)
	if err := s.commit(g); err != nil {
		// Unacknowledged: cancel it so it is not delivered after a restart
		// either (best effort; the client will send it again).
		s.cancel(id)
		return nil, err
	}
	s.hook(StepRecordSynced)
	return m, nil
}

// enqueueFile streams a large body to tmp/, fsyncs and renames it into
// msg/, fsyncs msg/, then commits its meta record.
func (s *store) enqueueFile(id string, r io.Reader, meta func(int64) *Meta) (*Meta, error) {
	tmp := s.path(dirTmp, id, ".eml")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	s.hook(StepBodyWritten)
	body := s.path(dirMsg, id, ".eml")
	if err := syncClose(f); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if err := os.Rename(tmp, body); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if err := s.msgDir.sync(); err != nil {
		os.Remove(body)
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	s.hook(StepBodyStored)
	m := meta(n)
	if err := s.commitMeta(m); err != nil {
		return nil, err
	}
	return m, nil
}

// commitMeta writes the first record of a message whose body is durable in
// msg/ (a large enqueue, a requeue): the commit point.
func (s *store) commitMeta(m *Meta) error {
	err := s.appendMeta(m, true, func() { s.hook(StepRecordWritten) })
	if err != nil {
		s.cancel(m.ID)
		os.Remove(s.path(dirMsg, m.ID, ".eml"))
		return err
	}
	s.hook(StepRecordSynced)
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
			return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
		}
		err = s.writeFile(fbody, r)
		r.Close()
		if err != nil {
			return err
		}
	} else if err := os.Link(s.path(dirMsg, m.ID, ".eml"), fbody); err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	return s.removeLive(m.ID)
}

// writeFile writes r to path durably except for the folder fsync: tmp/,
// fsync, rename.
func (s *store) writeFile(path string, r io.Reader) error {
	tmp := filepath.Join(s.dir, dirTmp, filepath.Base(filepath.Dir(path))+"-"+filepath.Base(path))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if err := s.msgDir.sync(); err != nil {
		os.Remove(body)
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
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

// ---- recovery ----

// scanned is what the log says about one live message.
type scanned struct {
	meta *Meta
	loc  loc
}

// scanSegment reads the segment at path and applies its intact records,
// in order, to live. buf is reused between segments. A record whose
// checksum holds but whose meta cannot be read is handed to bad.
func scanSegment(path string, seq uint64, live map[string]*scanned, buf *[]byte, bad func(off int64, raw []byte, why error)) (*segScan, error) {
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
		*buf = make([]byte, info.Size())
	}
	data := (*buf)[:info.Size()]
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, err
	}
	return applyRecords(data, seq, live, bad)
}

// applyRecords reads a segment's bytes (scanRecords) and applies its intact
// records, in order, to live. No I/O: FuzzRecover calls it directly.
func applyRecords(data []byte, seq uint64, live map[string]*scanned, bad func(off int64, raw []byte, why error)) (*segScan, error) {
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
// or not, opens a new log segment, and returns the live and failed messages.
func (s *store) recoverSpool() (live, failed []*Meta, err error) {
	// tmp/ holds only writes that never committed.
	tmps, _ := os.ReadDir(filepath.Join(s.dir, dirTmp))
	for _, e := range tmps {
		os.Remove(filepath.Join(s.dir, dirTmp, e.Name()))
	}

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

	seqs, err := s.segments()
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]*scanned{}
	formats := map[uint64]segFormat{}
	var buf []byte
	for i, seq := range seqs {
		path := s.segPath(seq)
		last := i == len(seqs)-1
		sc, err := scanSegment(path, seq, byID, &buf, func(off int64, raw []byte, why error) {
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
			for _, d := range sc.damage {
				where = append(where, fmt.Sprintf("%s (%d bytes)", d.why, d.to-d.from))
			}
			if sc.tail != nil {
				where = append(where, fmt.Sprintf("%s (%d bytes to the end)", sc.tail.why, sc.tail.to-sc.tail.from))
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

	// Open the segments (read-write, for appends to the new last one).
	for _, seq := range seqs {
		f, err := os.OpenFile(s.segPath(seq), os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed above
			}
			return nil, nil, err
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		s.segs = append(s.segs, &segment{seq: seq, f: f, size: info.Size(), format: formats[seq]})
	}
	if len(s.segs) > 0 {
		s.cur = s.segs[len(s.segs)-1]
	}
	s.mu.Lock()
	err = s.rotateLocked() // every run appends to a fresh segment
	if err != nil && isNoSpace(err) {
		// A full disk: give back the reserve and try again; failing that,
		// appends go on in the last segment (its tail is clean now).
		s.diskFullLocked(err)
		if err = s.rotateLocked(); err != nil && s.cur != nil && isNoSpace(err) && !s.cur.format.v1 {
			err = nil
		}
	}
	s.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	if err := s.importLegacy(byID); err != nil {
		return nil, nil, err
	}

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
			return nil, nil, err
		}
	}

	// msg/ bodies no live message names never committed (or were being
	// removed): orphans.
	bodies, _ := os.ReadDir(filepath.Join(s.dir, dirMsg))
	for _, e := range bodies {
		id, _ := strings.CutSuffix(e.Name(), ".eml")
		if sc := byID[id]; sc == nil || sc.loc.inline {
			os.Remove(filepath.Join(s.dir, dirMsg, e.Name()))
		}
	}
	// A failed body without its json: crashed in moveToFailed before the
	// json; the live copy is still there.
	for _, e := range fentries {
		id, ok := strings.CutSuffix(e.Name(), ".eml")
		if ok && failedByID[id] == nil {
			os.Remove(filepath.Join(s.dir, dirFailed, e.Name()))
		}
	}
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

// ---- maintenance: deleting and compacting segments ----

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

// checkWritable writes, syncs and removes a probe file in tmp/.
func (s *store) checkWritable() error {
	if since, full := s.diskFull(); full {
		return fmt.Errorf("%w since %s: new mail is refused with 452 4.3.1 until there is room; queued mail is still delivered", ErrDiskFull, since.UTC().Format(time.RFC3339))
	}
	p := s.path(dirTmp, "readyz-probe", ".tmp")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	_, err = f.Write([]byte("ok"))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(p)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	return nil
}

// ---- helpers ----

// readErr marks errors that came from the reader, not the disk.
type readErr struct{ err error }

func (e readErr) Error() string { return e.err.Error() }
func (e readErr) Unwrap() error { return e.err }

// errReader wraps a reader so its errors can be told from write errors.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = readErr{err}
	}
	return n, err
}

func isReadErr(err error) bool {
	var re readErr
	return errors.As(err, &re)
}

func syncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncer shares fsyncs between concurrent callers (group commit): one runs
// at a time, and a caller returns only after one that started after its
// call has finished, so its own write is covered.
type syncer struct {
	do func() error

	mu         sync.Mutex
	cond       *sync.Cond
	started    uint64
	completed  uint64
	running    bool
	lastErr    error
	lastErrGen uint64
}

func newDirSyncer(dir string) *syncer {
	d := &syncer{do: func() error { return syncDir(dir) }}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *syncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	target := d.started + 1 // a running fsync may have started before our write
	for d.completed < target {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		gen := d.started
		d.mu.Unlock()
		err := d.do()
		d.mu.Lock()
		d.running = false
		d.completed = gen
		if err != nil {
			d.lastErr, d.lastErrGen = err, gen
		}
		d.cond.Broadcast()
	}
	if d.lastErr != nil && d.lastErrGen >= target {
		return d.lastErr
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ---- offline inspection ----

// Inspect reads a spool without changing it (the relay may be running or
// stopped) and returns its live messages' latest state and its failed
// messages, oldest first. A torn tail is skipped, not cut.
func Inspect(dir string) (live, failed []*Meta, err error) {
	byID, err := inspectLog(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, sc := range byID {
		live = append(live, sc.meta)
	}
	s := &store{dir: dir}
	entries, err := os.ReadDir(filepath.Join(dir, dirFailed))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			if m, err := s.readMeta(filepath.Join(dir, dirFailed, e.Name())); err == nil {
				failed = append(failed, m)
			}
		}
	}
	byArrival := func(a, b *Meta) int {
		if c := a.Arrived.Compare(b.Arrived); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	}
	slices.SortFunc(live, byArrival)
	slices.SortFunc(failed, byArrival)
	return live, failed, nil
}

// InspectBody opens the body of message id (live or failed) in a spool,
// read-only.
func InspectBody(dir, id string) (io.ReadCloser, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q is not a message ID", id)
	}
	byID, err := inspectLog(dir)
	if err != nil {
		return nil, err
	}
	if sc := byID[id]; sc != nil {
		s := &store{dir: dir, locs: map[string]*loc{id: &sc.loc}}
		return s.openBody(id)
	}
	f, err := (&store{dir: dir}).openFailedBody(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return f, err
}

func inspectLog(dir string) (map[string]*scanned, error) {
	if _, err := os.Stat(filepath.Join(dir, dirLog)); err != nil {
		return nil, fmt.Errorf("%s is not a spool (no log/): %w", dir, err)
	}
	s := &store{dir: dir}
	seqs, err := s.segments()
	if err != nil {
		return nil, err
	}
	byID := map[string]*scanned{}
	var buf []byte
	for _, seq := range seqs {
		scanSegment(s.segPath(seq), seq, byID, &buf, func(int64, []byte, error) {})
	}
	return byID, nil
}

func writeZeros(f *os.File, n int64) error {
	zero := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := f.Write(zero[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
