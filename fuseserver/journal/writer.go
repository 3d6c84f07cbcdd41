package journal

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The writer id names the mount that owns a staging directory: a random
// 128-bit value made by the first server of the mount and read by every
// later one (a resume, a restart after a node reboot). Every object the
// mount uploads carries it, with the time its data became dirty, as the
// user metadata WriterMetadataKey, so a server that recovers staged data
// can tell an object this mount wrote (an upload whose end its record does
// not show, or an older staging of the same key) from another client's
// write, without trusting any clock but the node's own (see WriterMark).
//
// It lives in its own subdirectory, which version-1 readers of the journal
// skip (Scan ignores subdirectories), so older servers neither read nor
// report it.
const (
	// WriterDir is the subdirectory of a staging directory with the id.
	WriterDir = "writer"
	// writerFile is the id's file in WriterDir.
	writerFile = "id"
	// WriterMetadataKey is the user metadata key (x-amz-meta-rekey-writer)
	// of every object a mount uploads.
	WriterMetadataKey = "rekey-writer"
	writerIDLen       = 32 // hex digits
)

// WriterID returns the writer id of the staging directory dir, creating
// it if there is none. An id file that is not a valid id (a torn write on
// a node crash) is replaced: the mount then no longer recognises its own
// earlier uploads, which makes recovery stricter (it retains instead of
// uploading), never looser. replaced reports that.
func WriterID(dir string) (id string, replaced bool, err error) {
	wdir := filepath.Join(dir, WriterDir)
	path := filepath.Join(wdir, writerFile)
	b, err := os.ReadFile(path) //nolint:gosec // in the staging directory
	switch {
	case err == nil && validWriterID(strings.TrimSpace(string(b))):
		return strings.TrimSpace(string(b)), false, nil
	case err == nil:
		replaced = true
	case !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("journal: writer id: %w", err)
	}
	if err := os.MkdirAll(wdir, 0o700); err != nil {
		return "", false, fmt.Errorf("journal: writer id: %w", err)
	}
	var raw [writerIDLen / 2]byte
	_, _ = rand.Read(raw[:])
	id = hex.EncodeToString(raw[:])
	tmp := path + TempSuffix
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("journal: writer id: %w", err)
	}
	f, err := os.Open(tmp) //nolint:gosec // in the staging directory
	if err == nil {
		err = f.Sync()
		_ = f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(wdir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", false, fmt.Errorf("journal: writer id: %w", err)
	}
	return id, replaced, nil
}

func validWriterID(s string) bool {
	if len(s) != writerIDLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// WriterMark is the value of WriterMetadataKey on an object: the writer id
// and when the uploaded data became dirty (DirtySince, node clock, Unix
// nanoseconds). Between two uploads of one mount, the data that became
// dirty later is the newer: a staging made after another (an application
// that re-created the file) always is, and a staging that was uploaded and
// written to again gets a new DirtySince.
type WriterMark struct {
	ID         string
	DirtySince time.Time
}

// String is the metadata value, "<id>.<unix nanoseconds>".
func (m WriterMark) String() string {
	return m.ID + "." + strconv.FormatInt(m.DirtySince.UnixNano(), 10)
}

// ParseWriterMark parses a metadata value; ok is false for anything that
// is not a mark (another tool's value, a corrupted header).
func ParseWriterMark(s string) (m WriterMark, ok bool) {
	id, ns, found := strings.Cut(s, ".")
	if !found || !validWriterID(id) {
		return WriterMark{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil || n < 0 {
		return WriterMark{}, false
	}
	return WriterMark{ID: id, DirtySince: time.Unix(0, n)}, true
}

// removeWriter removes the writer id of dir (Prune, once nothing is kept).
func removeWriter(dir string) error {
	if err := os.RemoveAll(filepath.Join(dir, WriterDir)); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}
