package queue

// Offline inspection (`oauthrelay queue dump`): reading a spool without
// changing it, whether a relay runs on it or not.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

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
		scanSegment(s.segPath(seq), seq, byID, nil, &buf, func(int64, []byte, error) {})
	}
	return byID, nil
}
