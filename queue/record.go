package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// This file holds the spool log's record format: encoding, and reading a
// segment's bytes back, finding every intact record even after damage. It
// does no I/O; store.go reads and writes the files.
//
// A segment starts with a 24-byte line naming its format version; version
// 2 follows it with an 8-byte random nonce of the segment's own and the
// CRC-32C of that nonce. Its records are
//
//	[2 magic 0xA5 0x52][4 length n][4 CRC-32C of type+payload][1 type][4 CRC-32C of nonce + the 11 bytes before][n-1 payload]
//
// The magic and the header checksum let a reader that met a damaged record
// find the next intact one (resynchronise) instead of giving up on the rest
// of the segment. The nonce in the header checksum means a record cannot be
// forged from outside: bytes a client sends (a message body holding a copy
// of a record) never pass for a record while resynchronising, since the
// client cannot know the nonce; and such planted headers cost no more than
// one 15-byte checksum each to reject. Version 1 records ([4 length][4
// CRC][1 type][payload], after a 24-byte header) are still read; a reader
// resynchronises in them by trying every offset. Should the nonce itself be
// damaged (its checksum fails), the segment's records are read without
// header checksums, as version 1's are.

const (
	recNew  = 'N' // [4 meta length][meta JSON][body]: a message, body inline
	recMeta = 'M' // [meta JSON]: a message's new state (body unchanged)
	recDone = 'D' // [id]: the message left the live queue

	recHeader   = 15      // version 2 header, above
	recHeaderV1 = 9       // version 1 header
	recMax      = 8 << 20 // longest type+payload; never written longer, a longer length is damage

	segMagic    = "oauthrelay spool log v2\n"
	segMagicV1  = "oauthrelay spool log v1\n"
	segNonceLen = 8
	segHeader   = len(segMagic) + segNonceLen + 4 // where a version 2 segment's first record starts
)

var (
	crcTable = crc32.MakeTable(crc32.Castagnoli)
	recMagic = [2]byte{0xA5, 0x52}
)

// ErrRecordTooLarge: a record longer than recovery reads is refused, not
// written. It wraps ErrDiskTrouble, so the client gets 452 4.3.1.
var ErrRecordTooLarge = fmt.Errorf("%w: the message's envelope is too large for a spool record (%d MiB)", ErrDiskTrouble, recMax>>20)

// encodeRecord builds a version 2 record of type typ whose payload is the
// concatenation of parts. Its header checksum is left for sealRecord, with
// the nonce of the segment it goes to.
func encodeRecord(typ byte, parts ...[]byte) []byte {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, recHeader, recHeader+n-1)
	b[0], b[1] = recMagic[0], recMagic[1]
	binary.LittleEndian.PutUint32(b[2:], uint32(n))
	b[10] = typ
	for _, p := range parts {
		b = append(b, p...)
	}
	sum := crc32.Update(crc32.Checksum(b[10:11], crcTable), crcTable, b[recHeader:])
	binary.LittleEndian.PutUint32(b[6:], sum)
	return b
}

// sealRecord sets a version 2 record's header checksum for the segment
// whose nonce is given.
func sealRecord(rec, nonce []byte) {
	binary.LittleEndian.PutUint32(rec[11:], headerSum(nonce, rec[:11]))
}

func headerSum(nonce, hdr []byte) uint32 {
	return crc32.Update(crc32.Checksum(nonce, crcTable), crcTable, hdr)
}

func newRecord(meta, body []byte) []byte {
	var l [4]byte
	binary.LittleEndian.PutUint32(l[:], uint32(len(meta)))
	return encodeRecord(recNew, l[:], meta, body)
}

// splitNew splits a recNew payload into meta and body.
func splitNew(payload []byte) (meta, body []byte, ok bool) {
	if len(payload) < 4 {
		return nil, nil, false
	}
	ml := int(binary.LittleEndian.Uint32(payload))
	if ml > len(payload)-4 {
		return nil, nil, false
	}
	return payload[4 : 4+ml], payload[4+ml:], true
}

// segFormat is a segment's record format, from its header.
type segFormat struct {
	v1     bool
	hdrLen int    // of a record
	start  int    // offset of the first record
	nonce  []byte // version 2; nil: damaged, header checksums are not checked
}

func formatV1() segFormat { return segFormat{v1: true, hdrLen: recHeaderV1, start: len(segMagicV1)} }

func formatV2(nonce []byte) segFormat {
	return segFormat{hdrLen: recHeader, start: segHeader, nonce: nonce}
}

// segmentHeader is the start of a new version 2 segment with nonce.
func segmentHeader(nonce []byte) []byte {
	b := append([]byte(segMagic), nonce...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(nonce, crcTable))
}

// formatOf reads a segment's header (at least segHeader bytes of data, or
// a whole short version 1 segment). An unknown one is read as version 2.
// ok is false when the header is damaged.
func formatOf(data []byte) (f segFormat, ok bool) {
	if string(data[:len(segMagic)]) == segMagicV1 {
		return formatV1(), true
	}
	nonce := data[len(segMagic) : len(segMagic)+segNonceLen]
	if crc32.Checksum(nonce, crcTable) != binary.LittleEndian.Uint32(data[len(segMagic)+segNonceLen:]) {
		return formatV2(nil), false
	}
	return formatV2(bytes.Clone(nonce)), string(data[:len(segMagic)]) == segMagic
}

// typeAt is the type byte of a record header.
func (f segFormat) typeAt(hdr []byte) byte {
	if f.v1 {
		return hdr[8]
	}
	return hdr[10]
}

type recStatus int

const (
	recOK   recStatus = iota
	recTorn           // a header (or what may be one) whose record runs past the end
	recBad            // damaged: checksum, length or type wrong
)

// record is one record found in a segment's bytes.
type record struct {
	off     int
	size    int // header + payload
	typ     byte
	payload []byte // aliases the segment's bytes
}

// recordAt reads the record at off in data. For recBad, size is set when
// the header itself is known to be intact (version 2: its checksum holds),
// so the next record is expected at off+size.
func (f segFormat) recordAt(data []byte, off int) (record, recStatus) {
	rest := data[off:]
	if len(rest) < f.hdrLen {
		return record{off: off}, recTorn
	}
	var n int
	var typ byte
	var sum uint32
	if f.v1 {
		n, sum, typ = int(binary.LittleEndian.Uint32(rest)), binary.LittleEndian.Uint32(rest[4:]), rest[8]
		if n < 1 || n > recMax || typ != recNew && typ != recMeta && typ != recDone {
			return record{off: off}, recBad
		}
	} else {
		if rest[0] != recMagic[0] || rest[1] != recMagic[1] ||
			f.nonce != nil && binary.LittleEndian.Uint32(rest[11:]) != headerSum(f.nonce, rest[:11]) {
			return record{off: off}, recBad
		}
		n, sum, typ = int(binary.LittleEndian.Uint32(rest[2:])), binary.LittleEndian.Uint32(rest[6:]), rest[10]
		if n < 1 || n > recMax {
			return record{off: off}, recBad
		}
	}
	r := record{off: off, size: f.hdrLen + n - 1, typ: typ}
	if r.size > len(rest) {
		return r, recTorn
	}
	r.payload = rest[f.hdrLen:r.size]
	if crc32.Update(crc32.Checksum([]byte{typ}, crcTable), crcTable, r.payload) != sum {
		r.payload = nil
		if f.v1 {
			r.size = 0
		}
		return r, recBad
	}
	if typ != recNew && typ != recMeta && typ != recDone {
		return r, recBad // checksummed but of no known type: a newer build's record
	}
	return r, recOK
}

// resync finds the first intact record at or after from, or -1.
func (f segFormat) resync(data []byte, from int) int {
	for from < len(data) {
		var i int
		if f.v1 {
			i = from
		} else {
			j := bytes.Index(data[from:], recMagic[:])
			if j < 0 {
				return -1
			}
			i = from + j
		}
		if _, st := f.recordAt(data, i); st == recOK {
			return i
		}
		from = i + 1
	}
	return -1
}

// span is a damaged stretch of a segment: [from, to).
type span struct {
	from, to int
	why      string
}

// segScan is what reading a segment found.
type segScan struct {
	format  segFormat
	records []record
	// damage lists bad stretches with an intact record after them.
	damage []span
	// tail, when set, is a bad stretch running to the end of the segment;
	// torn says it looks like an interrupted append (a record running past
	// the end, a partial header, or zeros) rather than damage.
	tail *span
	torn bool
}

var errNoSegmentHeader = errors.New("no segment header")

// scanRecords reads every intact record of a segment's bytes in order. A
// bad record is skipped to the next intact one; nothing intact is dropped
// because of damage before it. An unknown segment header is read as
// version 2 (its records carry their own magic) and reported as damage.
func scanRecords(data []byte) (*segScan, error) {
	if len(data) < len(segMagic) || len(data) < segHeader && string(data[:len(segMagic)]) != segMagicV1 {
		return nil, errNoSegmentHeader
	}
	f, known := formatOf(data)
	sc := scanAs(f, data)
	if !known || len(sc.damage) > 0 || sc.tail != nil && !sc.torn {
		// The header may be the damaged part: read it the other way too
		// and keep whichever finds more.
		other := formatV1()
		if f.v1 && len(data) >= segHeader {
			other, _ = formatOf(append([]byte(segMagic), data[len(segMagic):]...))
		}
		if alt := scanAs(other, data); alt.recordBytes() > sc.recordBytes() {
			sc = alt
			known = false
		}
	}
	if !known {
		sc.damage = append([]span{{0, sc.format.start, fmt.Sprintf("segment header %q", data[:len(segMagic)])}}, sc.damage...)
	}
	return sc, nil
}

func (sc *segScan) recordBytes() int {
	n := 0
	for _, r := range sc.records {
		n += r.size
	}
	return n
}

func scanAs(f segFormat, data []byte) *segScan {
	sc := &segScan{format: f}
	off := f.start
	for off < len(data) {
		r, st := f.recordAt(data, off)
		if st == recOK {
			sc.records = append(sc.records, r)
			off += r.size
			continue
		}
		why := "torn record"
		if st == recBad {
			why = "bad record header or checksum"
		}
		why = fmt.Sprintf("%s at offset %d", why, off)
		next := -1
		if r.size > 0 && off+r.size <= len(data) {
			// An intact header says where the next record starts.
			if off+r.size == len(data) {
				next = len(data)
			} else if _, st2 := f.recordAt(data, off+r.size); st2 == recOK {
				next = off + r.size
			}
		}
		if next < 0 {
			next = f.resync(data, off+1)
		}
		if next < 0 || next == len(data) {
			sc.tail = &span{off, len(data), why}
			sc.torn = st == recTorn || allZero(data[off:])
			return sc
		}
		sc.damage = append(sc.damage, span{off, next, why})
		off = next
	}
	return sc
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
