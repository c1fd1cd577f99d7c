package queue

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// This file is the only one that touches the disk. Every durable write is
// write-temp, fsync, rename, fsync-directory; directory fsyncs are shared
// between concurrent writers (group commit) but a caller never returns
// before an fsync that started after its own rename has finished.

// ErrDiskTrouble wraps a failed write; the listener answers 452 4.3.1.
var ErrDiskTrouble = errors.New("spool write failed")

const (
	dirTmp     = "tmp"
	dirMsg     = "msg"
	dirMeta    = "meta"
	dirFailed  = "failed"
	dirCorrupt = "corrupt"
	dirSpare   = "spare"
)

// Crash points reported to a store's step hook, in the order Enqueue passes them.
const (
	StepBodyWritten = "body-written"
	StepMetaWritten = "meta-written"
	StepFilesSynced = "files-synced"
	StepBodyRenamed = "body-renamed"
	StepMetaRenamed = "meta-renamed"
	StepDirsSynced  = "dirs-synced"
)

type store struct {
	dir  string
	step func(string) // test hook between write steps; nil in production
	log  *slog.Logger

	msgDir, metaDir, failedDir *dirSyncer
	spares                     *spares
}

func openStore(dir string, step func(string), log *slog.Logger) (*store, error) {
	for _, d := range []string{"", dirTmp, dirMsg, dirMeta, dirFailed, dirCorrupt, dirSpare} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("queue: spool.dir %s: %w", dir, err)
		}
	}
	return &store{
		dir: dir, step: step, log: log,
		msgDir:    newDirSyncer(filepath.Join(dir, dirMsg)),
		metaDir:   newDirSyncer(filepath.Join(dir, dirMeta)),
		failedDir: newDirSyncer(filepath.Join(dir, dirFailed)),
		spares:    newSpares(filepath.Join(dir, dirSpare)),
	}, nil
}

func (s *store) path(sub, id, ext string) string {
	return filepath.Join(s.dir, sub, id+ext)
}

func (s *store) hook(step string) {
	if s.step != nil {
		s.step(step)
	}
}

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

// enqueue stores a new message durably: body and meta are written to tmp/
// and fsynced (concurrently), renamed into msg/ and meta/, and both folders
// fsynced (concurrently, shared with other writers). Only then does it
// return nil, and the caller may acknowledge. meta(size) builds the meta
// once the body's size is known.
//
// Crash safety: the body's bytes are durable before either rename. If a
// crash keeps the meta rename but loses the body's, that message was never
// acknowledged (acknowledging needs the msg/ fsync), so recovery drops it.
func (s *store) enqueue(id string, r io.Reader, meta func(size int64) *Meta) (*Meta, error) {
	tmpBody, f, err := s.openForWrite(s.path(dirTmp, id, ".eml"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	w := bufPool.Get().(*bufio.Writer)
	w.Reset(f)
	n, err := io.Copy(w, errReader{r})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Truncate(n) // a recycled file may hold older, longer content
	}
	w.Reset(nil)
	bufPool.Put(w)
	if err != nil {
		f.Close()
		os.Remove(tmpBody)
		if isReadErr(err) {
			return nil, err // the client's side failed, not the disk
		}
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	s.hook(StepBodyWritten)

	m := meta(n)
	tmpMeta, mf, err := s.writeTemp(m, dirMeta)
	if err != nil {
		f.Close()
		os.Remove(tmpBody)
		return nil, err
	}
	s.hook(StepMetaWritten)

	fail := func(err error) (*Meta, error) {
		os.Remove(tmpBody)
		os.Remove(tmpMeta)
		os.Remove(s.path(dirMeta, id, ".json"))
		os.Remove(s.path(dirMsg, id, ".eml"))
		return nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if err := parallel(func() error { return syncClose(f) }, func() error { return syncClose(mf) }); err != nil {
		return fail(err)
	}
	s.hook(StepFilesSynced)
	if err := os.Rename(tmpBody, s.path(dirMsg, id, ".eml")); err != nil {
		return fail(err)
	}
	s.hook(StepBodyRenamed)
	if err := os.Rename(tmpMeta, s.path(dirMeta, id, ".json")); err != nil {
		return fail(err)
	}
	s.hook(StepMetaRenamed)
	if err := parallel(s.msgDir.sync, s.metaDir.sync); err != nil {
		return fail(err)
	}
	s.hook(StepDirsSynced)
	return m, nil
}

// openForWrite returns a file to write new content into: a recycled one
// from spare/ (truncated), or else a new file at tmpPath. Creating and
// later freeing an inode per file is what costs most on ext4 (see README,
// Performance); recycling avoids both in steady state.
func (s *store) openForWrite(tmpPath string) (string, *os.File, error) {
	for {
		p := s.spares.take()
		if p == "" {
			break
		}
		// No O_TRUNC: freeing the old blocks costs about what an unlink
		// does. The caller overwrites from offset 0 and cuts the file to
		// its new length (finishWrite), which for small files frees nothing.
		f, err := os.OpenFile(p, os.O_WRONLY, 0o600)
		if err == nil {
			return p, f, nil
		}
		os.Remove(p)
	}
	f, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	return tmpPath, f, err
}

// retire disposes of a file that is no longer needed: into spare/ when it
// is small, has no other name (a failed/ copy may share its inode) and the
// pool has room; otherwise it is removed.
func (s *store) retire(path string) {
	info, err := os.Lstat(path)
	if err != nil {
		return
	}
	if !s.spares.reusable(info) {
		os.Remove(path)
		return
	}
	dst := s.spares.reserve()
	if dst == "" {
		os.Remove(path)
		return
	}
	if os.Rename(path, dst) != nil {
		s.spares.release()
		os.Remove(path)
		return
	}
	s.spares.give(dst)
}

// spares is the pool of recycled files in spare/. A spare's content is
// garbage; it is only ever truncated and rewritten.
type spares struct {
	dir    string
	prefix string
	max    int   // files kept at most
	size   int64 // larger files are not kept (their blocks would sit idle)

	mu       sync.Mutex
	free     []string
	reserved int
	seq      uint64
}

func newSpares(dir string) *spares {
	var b [4]byte
	rand.Read(b[:])
	return &spares{dir: dir, prefix: fmt.Sprintf("%x", b), max: 512, size: 256 << 10}
}

func (p *spares) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.free)
	if n == 0 {
		return ""
	}
	f := p.free[n-1]
	p.free = p.free[:n-1]
	return f
}

// reserve returns a new name in spare/ if the pool has room (give it back
// with give, or it is forgotten), else "".
func (p *spares) reserve() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free)+p.reserved >= p.max {
		return ""
	}
	p.reserved++
	p.seq++
	return filepath.Join(p.dir, fmt.Sprintf("%s-%d", p.prefix, p.seq))
}

// release forgets a reserved name that was not used.
func (p *spares) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reserved > 0 {
		p.reserved--
	}
}

func (p *spares) give(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reserved > 0 {
		p.reserved--
	}
	p.free = append(p.free, path)
}

func (p *spares) reusable(info fs.FileInfo) bool {
	if !info.Mode().IsRegular() || info.Size() > p.size {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return !ok || st.Nlink == 1
}

// load takes stock of spare/ at start: files with a second name (a crash
// between link and rename in writeJSON) or too large are removed.
func (p *spares) load() {
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		path := filepath.Join(p.dir, e.Name())
		info, err := os.Lstat(path)
		if err != nil || !p.reusable(info) || len(p.free) >= p.max {
			os.Remove(path)
			continue
		}
		p.free = append(p.free, path)
	}
}

// parallel runs a and b at once and returns the first error.
func parallel(a, b func() error) error {
	ch := make(chan error, 1)
	go func() { ch <- a() }()
	errB := b()
	if errA := <-ch; errA != nil {
		return errA
	}
	return errB
}

func syncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeTemp writes m as JSON to a new file in tmp/ and returns it open,
// not yet synced.
func (s *store) writeTemp(m *Meta, sub string) (string, *os.File, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", nil, err
	}
	tmp, f, err := s.openForWrite(s.path(dirTmp, m.ID+"."+sub, ".json"))
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Truncate(int64(len(b))) // a recycled file may hold older, longer content
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return "", nil, fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	return tmp, f, nil
}

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

// writeJSON writes m to sub/<id>.json durably (temp, fsync, rename, dir fsync).
func (s *store) writeJSON(sub string, sync *dirSyncer, m *Meta) error {
	tmp, f, err := s.writeTemp(m, sub)
	if err != nil {
		return err
	}
	if err := syncClose(f); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	target := s.path(sub, m.ID, ".json")
	// Keep the replaced file's inode for reuse: a second name in spare/
	// before the rename (a crash in between leaves a spare with two links,
	// which recovery never reuses).
	keep := s.spares.reserve()
	if keep != "" && os.Link(target, keep) != nil {
		s.spares.release()
		keep = "" // nothing to keep (a new file) or the link failed
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		if keep != "" {
			os.Remove(keep)
			s.spares.release()
		}
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if err := sync.sync(); err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if keep != "" {
		s.spares.give(keep)
	}
	return nil
}

// commitMeta writes the first meta of a message whose body is already
// durable in msg/ (requeue): the commit point.
func (s *store) commitMeta(m *Meta) error {
	if err := s.writeJSON(dirMeta, s.metaDir, m); err != nil {
		os.Remove(s.path(dirMeta, m.ID, ".json"))
		os.Remove(s.path(dirMsg, m.ID, ".eml"))
		return err
	}
	return nil
}

// writeMeta durably replaces meta/<id>.json.
func (s *store) writeMeta(m *Meta) error {
	return s.writeJSON(dirMeta, s.metaDir, m)
}

// removeLive deletes a live message: meta first (the commit point), then body.
func (s *store) removeLive(id string) error {
	meta := s.path(dirMeta, id, ".json")
	kept := s.spares.reserve()
	var err error
	if kept != "" {
		err = os.Rename(meta, kept) // out of meta/ is the removal; the inode is reused
	} else {
		err = os.Remove(meta)
	}
	if err != nil {
		if kept != "" {
			s.spares.release()
			kept = ""
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
		}
	}
	if err := s.metaDir.sync(); err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if kept != "" {
		s.spares.give(kept)
	}
	s.retire(s.path(dirMsg, id, ".eml"))
	return nil
}

// moveToFailed moves a finished message to failed/. Order, so that every
// crash point is recoverable (see recoverSpool): link the body into failed/,
// write failed/<id>.json, remove meta (now it is no longer live), remove the
// live body.
func (s *store) moveToFailed(m *Meta) error {
	body := s.path(dirMsg, m.ID, ".eml")
	fbody := s.path(dirFailed, m.ID, ".eml")
	os.Remove(fbody)
	if err := os.Link(body, fbody); err != nil {
		return fmt.Errorf("%w: %v", ErrDiskTrouble, err)
	}
	if err := s.writeJSON(dirFailed, s.failedDir, m); err != nil {
		os.Remove(fbody)
		return err
	}
	return s.removeLive(m.ID)
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

// openBody opens a live message's body for reading.
func (s *store) openBody(id string) (*os.File, error) {
	return os.Open(s.path(dirMsg, id, ".eml"))
}

// openFailedBody opens a failed message's body for reading.
func (s *store) openFailedBody(id string) (*os.File, error) {
	return os.Open(s.path(dirFailed, id, ".eml"))
}

func (s *store) readMeta(path string) (*Meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	if id := strings.TrimSuffix(filepath.Base(path), ".json"); id != m.ID {
		return nil, fmt.Errorf("file name %s does not match id %s", id, m.ID)
	}
	return &m, nil
}

// quarantine moves what belongs to id from sub/ to corrupt/, never deleting.
func (s *store) quarantine(sub, id string, why error) {
	for _, ext := range []string{".json", ".eml"} {
		from := s.path(sub, id, ext)
		if sub == dirMeta && ext == ".eml" {
			from = s.path(dirMsg, id, ".eml")
		}
		if _, err := os.Stat(from); err == nil {
			os.Rename(from, s.path(dirCorrupt, id, ext))
		}
	}
	s.log.Error("queue: unreadable message quarantined in corrupt/", "id", id, "from", sub, "error", why.Error())
}

// recoverSpool brings the spool to a consistent state after any stop, clean
// or not, and returns the live and failed messages.
func (s *store) recoverSpool() (live, failed []*Meta, err error) {
	// tmp/ holds only writes that never committed.
	s.spares.load()
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

	mentries, err := os.ReadDir(filepath.Join(s.dir, dirMeta))
	if err != nil {
		return nil, nil, err
	}
	liveIDs := map[string]bool{}
	for _, e := range mentries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		if _, done := failedByID[id]; done {
			// Crashed in moveToFailed after failed/<id>.json was written.
			s.removeLive(id)
			continue
		}
		m, err := s.readMeta(filepath.Join(s.dir, dirMeta, e.Name()))
		if err == nil {
			if _, serr := os.Stat(s.path(dirMsg, id, ".eml")); serr != nil {
				if m.Attempts == 0 && m.RequeuedFrom == "" {
					// Enqueue's meta rename survived a crash, its body's did
					// not: it was never acknowledged (see enqueue).
					os.Remove(s.path(dirMeta, id, ".json"))
					s.log.Warn("queue: dropped a message whose enqueue never completed", "id", id)
					continue
				}
				err = fmt.Errorf("body missing: %w", serr)
			}
		}
		if err != nil {
			s.quarantine(dirMeta, id, err)
			continue
		}
		if m.RequeuedFrom != "" {
			if _, stale := failedByID[m.RequeuedFrom]; stale {
				s.removeFailed(m.RequeuedFrom) // crashed in requeue after the commit
				delete(failedByID, m.RequeuedFrom)
			}
		}
		liveIDs[id] = true
		live = append(live, m)
	}

	// Bodies without meta never committed (or were being removed): orphans.
	bodies, _ := os.ReadDir(filepath.Join(s.dir, dirMsg))
	for _, e := range bodies {
		id, _ := strings.CutSuffix(e.Name(), ".eml")
		if !liveIDs[id] {
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
	return live, failed, nil
}

// checkWritable writes, syncs and removes a probe file in tmp/.
func (s *store) checkWritable() error {
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

// dirSyncer shares directory fsyncs between concurrent callers: one fsync at
// a time; a caller waits for the first fsync that starts after it called.
type dirSyncer struct {
	dir string

	mu         sync.Mutex
	cond       *sync.Cond
	started    uint64
	completed  uint64
	running    bool
	lastErr    error
	lastErrGen uint64
}

func newDirSyncer(dir string) *dirSyncer {
	d := &dirSyncer{dir: dir}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *dirSyncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	target := d.started + 1 // a running fsync may have started before our rename
	for d.completed < target {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		gen := d.started
		d.mu.Unlock()
		err := syncDir(d.dir)
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
