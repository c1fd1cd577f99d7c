package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// holdAll keeps every message queued: the account is paused.
func holdAll() *recorder {
	return newRecorder(func(d *Delivery) Result { return Result{PauseAccount: "hold"} })
}

// sealedFor seals rec for the segment at path, as an append to it would be.
func sealedFor(t *testing.T, path string, rec []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < segHeader {
		t.Fatalf("segment %s: %v", path, err)
	}
	sealRecord(rec, b[len(segMagic):len(segMagic)+segNonceLen])
	return rec
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	s := &store{dir: dir}
	seqs, err := s.segments()
	if err != nil || len(seqs) == 0 {
		t.Fatalf("no segments: %v", err)
	}
	return s.segPath(seqs[len(seqs)-1])
}

// A message whose envelope would make a record longer than recovery reads
// is refused (452 4.3.1 at the listener), and the messages before and after
// it survive a restart. It once was written, and recovery then dropped it
// and every record after it.
func TestStore_OversizeEnvelopeRefusedNotWritten(t *testing.T) {
	dir := t.TempDir()
	q1 := open(t, dir, holdAll(), nil)
	q1.Pause("helpdesk", "hold")
	first := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "msg1")
	var huge []string
	for i := range 100 {
		huge = append(huge, fmt.Sprintf("r%03d%s@example.com", i, strings.Repeat("x", 120_000)))
	}
	_, err := q1.Enqueue(context.Background(), env("a@contoso.com", huge...), strings.NewReader("msg2"))
	if !errors.Is(err, ErrDiskTrouble) {
		t.Fatalf("enqueue of a 12 MB envelope: %v, want ErrDiskTrouble (452 4.3.1)", err)
	}
	third := enqueue(t, q1, env("a@contoso.com", "c@example.com"), "msg3")
	q1.Close(context.Background())

	var logs bytes.Buffer
	q2 := open(t, dir, holdAll(), func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	for _, id := range []string{first, third} {
		if _, err := q2.Get(id); err != nil {
			t.Errorf("%s lost after restart: %v", id, err)
		}
	}
	if n := len(q2.List(Filter{})); n != 2 {
		t.Errorf("%d messages after restart, want 2", n)
	}
	if strings.Contains(logs.String(), "damaged") {
		t.Errorf("recovery found damage: %s", logs.String())
	}
}

// One damaged byte in the first record of the newest segment loses only
// that record: the later ones are recovered, the segment is copied to
// corrupt/ and an error is logged.
func TestStore_DamagedRecordKeepsTheRecordsAfterIt(t *testing.T) {
	for _, where := range []struct {
		name string
		at   func(rec []byte, start int) int // the byte to flip
	}{
		{"in the body", func(b []byte, start int) int { return bytes.Index(b, []byte("body 0")) }},
		{"in the header", func(b []byte, start int) int { return start + 3 }},
		{"in the length", func(b []byte, start int) int { return start + 4 }},
	} {
		t.Run(where.name, func(t *testing.T) {
			dir := t.TempDir()
			q1 := open(t, dir, holdAll(), nil)
			q1.Pause("helpdesk", "hold")
			var ids []string
			for i := range 3 {
				ids = append(ids, enqueue(t, q1, env("a@contoso.com", "b@example.com"), fmt.Sprintf("body %d", i)))
			}
			q1.Close(context.Background())
			seg := lastSegment(t, dir)
			b, _ := os.ReadFile(seg)
			b[where.at(b, segHeader)] ^= 0x40
			os.WriteFile(seg, b, 0o600)

			var logs bytes.Buffer
			rec := newRecorder(nil)
			open(t, dir, rec, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			waitFor(t, "the two intact messages delivered", func() bool { return rec.count() == 2 })
			for i, id := range ids[1:] {
				if got := string(rec.delivered[id]); got != fmt.Sprintf("body %d", i+1) {
					t.Errorf("message %d delivered as %q", i+1, got)
				}
			}
			if got := files(t, filepath.Join(dir, dirCorrupt)); len(got) != 1 || got[0] != filepath.Base(seg) {
				t.Errorf("corrupt/ holds %v, want a copy of %s", got, filepath.Base(seg))
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "damaged log segment") {
				t.Errorf("damage not logged as an error: %s", logs.String())
			}
			// The log names the message the damage cost.
			if !strings.Contains(logs.String(), "lost to the damage") || !strings.Contains(logs.String(), "id="+ids[0]) {
				t.Errorf("the lost message is not named: %s", logs.String())
			}
		})
	}
}

// encodeRecordV1 writes a record as the first log layout did.
func encodeRecordV1(typ byte, payload []byte) []byte {
	b := make([]byte, recHeaderV1, recHeaderV1+len(payload))
	binary.LittleEndian.PutUint32(b, uint32(1+len(payload)))
	b[8] = typ
	b = append(b, payload...)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

// Segments of the first log format are still read, damage in them too.
func TestStore_ReadsVersion1Segments(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, dirLog), 0o700)
	seg := []byte(segMagicV1)
	var ids []string
	for i := range 3 {
		m := &Meta{Version: MetaVersion, ID: newID(time.Now()), From: "a@contoso.com", Account: "helpdesk", Arrived: time.Now(), AgeFrom: time.Now(),
			Recipients: []Recipient{{Addr: "b@example.com", State: StateQueued}}}
		ids = append(ids, m.ID)
		mb, _ := json.Marshal(m)
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(len(mb)))
		seg = append(seg, encodeRecordV1(recNew, append(append(l[:], mb...), fmt.Sprintf("v1 body %d", i)...))...)
	}
	seg[bytes.Index(seg, []byte("v1 body 0"))] ^= 1
	os.WriteFile((&store{dir: dir}).segPath(1), seg, 0o600)

	rec := newRecorder(nil)
	q := open(t, dir, rec, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)) })
	waitFor(t, "the intact v1 messages delivered", func() bool { return rec.count() == 2 })
	if string(rec.delivered[ids[2]]) != "v1 body 2" {
		t.Errorf("delivered %q", rec.delivered)
	}
	// New records go to a version 2 segment after it.
	enqueue(t, q, env("a@contoso.com", "c@example.com"), "v2")
	waitFor(t, "the new message delivered", func() bool { return rec.count() == 3 })
}

// FuzzRecover damages a valid log (bytes overwritten at an offset, or
// appended) and checks that recovery never panics and that every record
// the damage did not touch is recovered with its body.
func FuzzRecover(f *testing.F) {
	f.Add(uint16(30), []byte{0xff}, false)
	f.Add(uint16(24), []byte{0xA5, 0x52, 0, 0}, false)
	f.Add(uint16(200), bytes.Repeat([]byte{0}, 300), false)
	f.Add(uint16(0), []byte("oauthrelay spool log v1\n"), false)
	f.Add(uint16(0), []byte{0xA5, 0x52, 1, 0, 0, 0}, true)
	f.Add(uint16(500), []byte("garbage that is long enough to cross a record boundary, maybe two of them"), false)
	f.Fuzz(func(t *testing.T, at uint16, junk []byte, appendIt bool) {
		type span struct{ from, to int }
		nonce := []byte("12345678")
		var log []byte
		log = append(log, segmentHeader(nonce)...)
		bodies := map[string]string{}
		where := map[string]span{}
		base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		for i := range 6 {
			m := &Meta{Version: MetaVersion, ID: fmt.Sprintf("%012x%08x", base.UnixMilli()+int64(i), i), From: "a@contoso.com",
				Account: "helpdesk", Arrived: base, Recipients: []Recipient{{Addr: "b@example.com", State: StateQueued}}}
			mb, _ := json.Marshal(m)
			body := fmt.Sprintf("message %d %s", i, strings.Repeat("z", i*7))
			r := newRecord(mb, []byte(body))
			sealRecord(r, nonce)
			where[m.ID] = span{len(log), len(log) + len(r)}
			bodies[m.ID] = body
			log = append(log, r...)
		}
		orig := bytes.Clone(log)
		if appendIt {
			log = append(log, junk...)
		} else {
			off := int(at) % len(log)
			end := min(off+len(junk), len(log))
			copy(log[off:end], junk)
		}
		// Recovery's reading of the segment, without the disk (fast enough
		// to fuzz; the tests above go through the files).
		live := map[string]*scanned{}
		if _, err := applyRecords(log, 1, live, nil, func(int64, []byte, error) {}); err != nil {
			if len(log) >= segHeader {
				t.Fatal(err)
			}
			return
		}
		for id, sp := range where {
			if sp.to > len(log) || !bytes.Equal(orig[sp.from:sp.to], log[sp.from:sp.to]) {
				continue // damaged
			}
			sc := live[id]
			if sc == nil {
				t.Fatalf("intact record %s at %d..%d not recovered", id, sp.from, sp.to)
			}
			if got := string(log[sc.loc.bodyOff : sc.loc.bodyOff+sc.loc.bodyLen]); got != bodies[id] {
				t.Fatalf("%s: body %q, want %q", id, got, bodies[id])
			}
		}
	})
}

// A full disk: the relay starts, delivers what is queued, refuses new mail
// with ErrDiskFull (452 4.3.1) and says so, and accepts mail again once
// there is room. Needs root for a small tmpfs; skipped otherwise, except in
// CI, where it must run.
func TestQueue_FullDisk(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount tmpfs (CI runs as root): %v: %s", err, out)
		}
		t.Skipf("needs root to mount a small tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	dir := filepath.Join(mnt, "spool")
	reserve := func(o *Options) { o.DiskReserve = 256 << 10; o.SegmentMax = 1 << 20 }

	q1 := open(t, dir, holdAll(), reserve)
	q1.Pause("helpdesk", "hold")
	if _, err := os.Stat(filepath.Join(dir, "reserve")); err != nil {
		t.Fatalf("no spool/reserve: %v", err)
	}
	var queued []string
	body := strings.Repeat("0123456789abcdef", 4<<10) // 64 KiB, in the log
	for {
		id, err := q1.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), strings.NewReader(body))
		if err != nil {
			if !errors.Is(err, ErrDiskFull) {
				t.Fatalf("enqueue on a filling disk: %v, want ErrDiskFull", err)
			}
			break
		}
		queued = append(queued, id)
	}
	if len(queued) < 10 {
		t.Fatalf("only %d messages fit", len(queued))
	}
	if err := q1.CheckWritable(); !errors.Is(err, ErrDiskFull) {
		t.Errorf("CheckWritable on a full disk: %v", err)
	}
	q1.Close(context.Background())
	// Fill what the released reserve gave back, so the disk is really full
	// at the next start.
	filler, _ := os.Create(filepath.Join(mnt, "filler"))
	writeZeros(filler, 8<<20)
	filler.Close()

	var logs lockedBuffer // the maintenance goroutine logs while the test reads
	rec := newRecorder(nil)
	q2 := open(t, dir, rec, func(o *Options) {
		reserve(o)
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if _, full := q2.DiskFull(); !full {
		t.Errorf("started on a full disk without saying so")
	}
	waitFor(t, "the queued mail delivered on a full disk", func() bool { return rec.count() == len(queued) })
	if _, err := q2.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), strings.NewReader("new")); !errors.Is(err, ErrDiskFull) {
		t.Errorf("new mail on a full disk: %v, want ErrDiskFull", err)
	}
	os.Remove(filepath.Join(mnt, "filler"))
	waitFor(t, "new mail accepted once there is room", func() bool {
		_, err := q2.Enqueue(context.Background(), env("a@contoso.com", "b@example.com"), strings.NewReader("new"))
		if err == nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	if err := q2.CheckWritable(); err != nil {
		t.Errorf("CheckWritable with room again: %v", err)
	}
	if !strings.Contains(logs.String(), "disk is full") || !strings.Contains(logs.String(), "room again") {
		t.Errorf("log does not tell the story: %s", logs.String())
	}
}

// A client cannot plant a record: a message body holding a well-formed
// record (here a whole new message) is never taken for one while recovery
// resynchronises through it after damage, because the record's header
// checksum needs the segment's nonce, which no client can know.
func TestStore_RecordPlantedInABodyIsNotTrusted(t *testing.T) {
	dir := t.TempDir()
	q1 := open(t, dir, holdAll(), nil)
	q1.Pause("helpdesk", "hold")
	m := &Meta{Version: MetaVersion, ID: newID(time.Now()), From: "attacker@evil.example", Account: "helpdesk", Arrived: time.Now(), AgeFrom: time.Now(),
		Recipients: []Recipient{{Addr: "victim@example.com", State: StateQueued}}}
	mb, _ := json.Marshal(m)
	planted := newRecord(mb, []byte("planted"))
	sealRecord(planted, make([]byte, segNonceLen)) // the best guess: any nonce
	carrier := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "start "+string(planted)+" end")
	after := enqueue(t, q1, env("a@contoso.com", "c@example.com"), "after")
	q1.Close(context.Background())
	seg := lastSegment(t, dir)
	b, _ := os.ReadFile(seg)
	b[segHeader+3] ^= 0x40 // the carrier's own header: recovery must resynchronise
	os.WriteFile(seg, b, 0o600)

	q2 := open(t, dir, holdAll(), nil)
	if _, err := q2.Get(m.ID); err == nil {
		t.Fatal("a record planted in a message body was recovered as a message")
	}
	if _, err := q2.Get(after); err != nil {
		t.Errorf("the message after the damage was not recovered: %v", err)
	}
	_ = carrier
}

// After a stop in the middle of an attempt (a crash: its recipients are
// still inflight on disk), `queue show` says the attempt was interrupted
// instead of showing a deferred message with an inflight recipient and no
// reply.
func TestQueue_InterruptedAttemptSaysSo(t *testing.T) {
	dir := t.TempDir()
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	q1 := open(t, dir, DelivererFunc(func(ctx context.Context, d *Delivery) Result {
		started <- struct{}{}
		<-release
		return Result{}
	}), nil)
	id := enqueue(t, q1, env("a@contoso.com", "b@example.com"), "body")
	<-started
	// The spool as a crash would leave it: copied while the attempt runs.
	crashed := t.TempDir()
	if out, err := exec.Command("cp", "-a", dir+"/.", crashed).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(crashed, "lock"))
	close(release)

	q2 := open(t, crashed, holdAll(), nil)
	q2.Pause("helpdesk", "hold")
	m, err := q2.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Recipients[0]; r.State != StateDeferred || r.Last == nil || !strings.Contains(r.Last.Text, "stopped during this attempt") {
		t.Errorf("after an interrupted attempt: %s %+v", r.State, r.Last)
	}
	if m.Attempts != 1 {
		t.Errorf("attempts %d, want the interrupted one counted", m.Attempts)
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger in another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
