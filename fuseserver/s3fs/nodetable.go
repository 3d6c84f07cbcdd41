package s3fs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
)

// The node table saves what a process that takes over the kernel
// connection needs to know of the node numbers the kernel holds and no
// hash of a key gives (nodeid.go): exceptions, holds, and the
// directories whose entries were handed out. It is a file of JSON lines
// in Options.StagingDir/nodes, a header line with the format version
// first, then records appended as things change:
//
//	{"format":"rekey-s3fs-nodes","version":1,"hash":"fnv1a64"}
//	{"op":"dir","key":"photos/"}                   entries of photos/ were handed out
//	{"op":"node","ino":12345,"key":"photos/b.jpg"} 12345 is the node of photos/b.jpg
//	{"op":"node","ino":12345,"key":"b","from":"a"} a rename of a to b began
//	{"op":"hold","ino":12345}                      12345 is taken, by no name (unlinked)
//	{"op":"drop","ino":12345}                      12345 is no exception any more
//
// A key that is not valid UTF-8 is in "keyb" (and "fromb"), base64.
// Records are written with write(2) before the kernel learns what they
// say, and not synced: a process that dies leaves them in the page
// cache, and a node reboot, which loses them, also ends every FUSE
// connection. The file is rewritten (temporary file, then rename) when
// most of its records are obsolete, and emptied when a new kernel
// connection starts (Mount, Serve).

// nodeTableFormat and the supported versions of the node table.
const (
	nodeTableFormat  = "rekey-s3fs-nodes"
	nodeTableVersion = 1
)

// nodeTableVersions are the versions this build reads.
var nodeTableVersions = []int{1}

// Limits of the node table: exceptions and holds, and directories. Beyond
// them numbers are still handed out, but not saved (logged once): a
// process that takes over cannot resolve those nodes.
const (
	maxSavedNodes = 1 << 16
	maxSavedDirs  = 1 << 16
)

// ErrNodeTable is wrapped by errors reading the node table; the file is
// left as it is.
var ErrNodeTable = errors.New("s3fs: node table")

// nodeTableDir and nodeTableName place the table in the staging
// directory (a subdirectory: the staging journal reports files it does
// not know).
const (
	nodeTableDir  = "nodes"
	nodeTableName = "table.jsonl"
)

// Record operations.
const (
	opDir  = "dir"
	opNode = "node"
	opHold = "hold"
	opDrop = "drop"
)

type tableHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Hash    string `json:"hash"`
}

type tableRecord struct {
	Op  string `json:"op"`
	Ino uint64 `json:"ino,omitempty"`
	// Key and From are the keys; they are written to KeyB and FromB
	// instead when not valid UTF-8 (JSON strings would change them).
	Key   string `json:"key,omitempty"`
	KeyB  []byte `json:"keyb,omitempty"`
	From  string `json:"from,omitempty"`
	FromB []byte `json:"fromb,omitempty"`
}

func (r tableRecord) encode(buf *bytes.Buffer) {
	if !utf8.ValidString(r.Key) {
		r.Key, r.KeyB = "", []byte(r.Key)
	}
	if !utf8.ValidString(r.From) {
		r.From, r.FromB = "", []byte(r.From)
	}
	b, _ := json.Marshal(r) // cannot fail: strings, numbers, bytes
	buf.Write(b)
	buf.WriteByte('\n')
}

func (r *tableRecord) decode(line []byte) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(r); err != nil {
		return err
	}
	if r.KeyB != nil {
		r.Key = string(r.KeyB)
	}
	if r.FromB != nil {
		r.From = string(r.FromB)
	}
	switch r.Op {
	case opDir:
	case opNode:
		if r.Ino <= 1 || r.Key == "" {
			return fmt.Errorf("node record without number or key")
		}
	case opHold, opDrop:
		if r.Ino <= 1 {
			return fmt.Errorf("%s record without number", r.Op)
		}
	default:
		return fmt.Errorf("unknown op %q", r.Op)
	}
	return nil
}

// tableFile is the open node table.
type tableFile struct {
	path    string
	file    *os.File // O_APPEND
	records int      // records in the file, for compaction
	failed  bool     // a write failed (logged once)
}

// openNodeTable loads the node table in dir (created with mode 0700 if
// missing) and rewrites it compacted. entryTTL is the kernel's entry
// timeout: a non-empty table is inherited for that long (adoptLocked). An unreadable table is an error
// wrapping ErrNodeTable, and the file is left as it is.
func openNodeTable(dir string, h nodeHash, entryTTL time.Duration, log logr.Logger) (*nodeTable, error) {
	t := newNodeTable(h, log)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNodeTable, err)
	}
	path := filepath.Join(dir, nodeTableName)
	if err := t.load(path); err != nil {
		return nil, err
	}
	if len(t.dirs) > 0 || len(t.byIno) > 0 {
		t.inherited = t.now() + entryTTL
	}
	recs := t.recordsLocked()
	f, err := t.writeTable(path, recs)
	if err != nil {
		return nil, err
	}
	t.file = &tableFile{path: path, file: f, records: len(recs)}
	return t, nil
}

// load reads the node table at path into t; a missing file is an empty
// table. A last line without its newline may have been cut short by a
// death: it is ignored unless it reads as a whole record.
func (t *nodeTable) load(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNodeTable, err)
	}
	fail := func(line int, err error) error {
		return fmt.Errorf("%w: %s line %d: %w (the file is kept; only a resumed mount needs it, remove it to start afresh)", ErrNodeTable, path, line, err)
	}
	lines := bytes.Split(data, []byte("\n"))
	for i, text := range lines {
		last := i == len(lines)-1 // no newline after it: cut short, or empty
		if last && len(text) == 0 {
			break
		}
		if i == 0 {
			var hdr tableHeader
			if err := json.Unmarshal(text, &hdr); err != nil || hdr.Format != nodeTableFormat {
				if last {
					return nil // the header itself was cut short
				}
				return fail(1, fmt.Errorf("not a node table header: %q", text))
			}
			if !slices.Contains(nodeTableVersions, hdr.Version) {
				return fail(1, fmt.Errorf("version %d is not supported (this build reads %v)", hdr.Version, nodeTableVersions))
			}
			if hdr.Hash != t.hash.name {
				return fail(1, fmt.Errorf("hash %q, this build numbers nodes with %q", hdr.Hash, t.hash.name))
			}
			continue
		}
		var r tableRecord
		if err := r.decode(text); err != nil {
			if last {
				t.log.Info("node table: last record cut short, ignored", "path", path, "line", i+1)
				break
			}
			return fail(i+1, err)
		}
		t.applyLocked(r)
	}
	return nil
}

// applyLocked applies one record read from the table.
func (t *nodeTable) applyLocked(r tableRecord) {
	switch r.Op {
	case opDir:
		t.dirs[r.Key] = true
		return
	case opDrop:
		if rec := t.byIno[r.Ino]; rec != nil {
			if rec.saved {
				rec.saved = false
				t.saved--
			}
			delete(t.byIno, rec.ino)
			if t.byKey[rec.key] == rec {
				delete(t.byKey, rec.key)
			}
		}
		return
	}
	rec := t.byIno[r.Ino]
	if rec == nil {
		rec = &nodeRec{ino: r.Ino, saved: true}
		t.byIno[r.Ino] = rec
		t.saved++
	}
	if rec.key != "" && t.byKey[rec.key] == rec {
		delete(t.byKey, rec.key)
	}
	rec.key, rec.from = "", ""
	if r.Op == opHold {
		return
	}
	if other := t.byKey[r.Key]; other != nil && other != rec {
		other.key = "" // a later record gave the key another number
	}
	rec.key, rec.from = r.Key, r.From
	t.byKey[r.Key] = rec
}

// recordsLocked returns the table as a rewrite writes it: the
// directories, then the saved numbers, sorted.
func (t *nodeTable) recordsLocked() []tableRecord {
	var out []tableRecord
	dirs := make([]string, 0, len(t.dirs))
	for dk := range t.dirs {
		dirs = append(dirs, dk)
	}
	sort.Strings(dirs)
	for _, dk := range dirs {
		out = append(out, tableRecord{Op: opDir, Key: dk})
	}
	var nodes []*nodeRec
	for _, rec := range t.byIno {
		if rec.saved || rec.moving != "" {
			nodes = append(nodes, rec)
		}
	}
	sort.Slice(nodes, func(a, b int) bool { return nodes[a].ino < nodes[b].ino })
	for _, rec := range nodes {
		switch {
		case rec.moving != "":
			out = append(out, tableRecord{Op: opNode, Ino: rec.ino, Key: rec.moving, From: rec.key})
		case rec.key == "":
			out = append(out, tableRecord{Op: opHold, Ino: rec.ino})
		default:
			out = append(out, tableRecord{Op: opNode, Ino: rec.ino, Key: rec.key, From: rec.from})
		}
	}
	return out
}

// writeTable writes a table of recs to path through a temporary file and
// a rename, and returns it open for appending.
func (t *nodeTable) writeTable(path string, recs []tableRecord) (*os.File, error) {
	var buf bytes.Buffer
	hdr, _ := json.Marshal(tableHeader{Format: nodeTableFormat, Version: nodeTableVersion, Hash: t.hash.name})
	buf.Write(hdr)
	buf.WriteByte('\n')
	for _, r := range recs {
		r.encode(&buf)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), nodeTableName+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNodeTable, err)
	}
	_, err = tmp.Write(buf.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	// path is the node table in the staging directory this process was
	// given (--staging-dir, from the supervisor), not outside input.
	if err == nil {
		err = os.Rename(tmp.Name(), path) //nolint:gosec // G703: see above
	}
	if err != nil {
		_ = os.Remove(tmp.Name()) //nolint:gosec // G703: see above
		return nil, fmt.Errorf("%w: %w", ErrNodeTable, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0) //nolint:gosec // G703: see above
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNodeTable, err)
	}
	return f, nil
}

// appendLocked appends recs with one write(2), then rewrites the table if
// most of it is obsolete. Every caller has changed t before, so the
// rewrite, made from t, holds all of it. A failed write is logged (once)
// and not retried: serving goes on, only a resume would miss the record.
func (t *nodeTable) appendLocked(recs ...tableRecord) {
	if t.file == nil || len(recs) == 0 {
		return
	}
	var buf bytes.Buffer
	for _, r := range recs {
		r.encode(&buf)
	}
	if _, err := t.file.file.Write(buf.Bytes()); err != nil {
		if !t.file.failed {
			t.log.Error(err, "node table: write failed; a resumed mount may not resolve some nodes", "path", t.file.path)
		}
		t.file.failed = true
		return
	}
	t.file.records += len(recs)
	t.maybeCompactLocked()
}

// maybeCompactLocked rewrites the table once more than half of its
// records (and over 1024) are obsolete.
func (t *nodeTable) maybeCompactLocked() {
	if t.file == nil || t.file.records <= 2*(len(t.dirs)+t.saved)+1024 {
		return
	}
	recs := t.recordsLocked()
	f, err := t.writeTable(t.file.path, recs)
	if err != nil {
		if !t.file.failed {
			t.log.Error(err, "node table: rewrite failed", "path", t.file.path)
		}
		t.file.failed = true
		return
	}
	_ = t.file.file.Close()
	t.file.file, t.file.records = f, len(recs)
}

// roomLocked reports whether the table has room for one more record of
// a kind it holds n of, at most limit.
func (t *nodeTable) roomLocked(n, limit int) bool {
	if t.file == nil {
		return false
	}
	if n < limit {
		return true
	}
	if !t.full {
		t.full = true
		t.log.Info("node table full: further nodes cannot be resolved by a process that takes the mount over", "path", t.file.path, "saved", t.saved, "dirs", len(t.dirs))
	}
	return false
}

// reset empties the table: a new kernel connection holds none of the
// numbers it names.
func (t *nodeTable) reset() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byIno = make(map[uint64]*nodeRec)
	t.byKey = make(map[string]*nodeRec)
	t.dirs = make(map[string]bool)
	t.dying, t.saved, t.full, t.inherited = nil, 0, false, 0
	if t.file == nil {
		return nil
	}
	f, err := t.writeTable(t.file.path, nil)
	if err != nil {
		return err
	}
	_ = t.file.file.Close()
	t.file.file, t.file.records = f, 0
	return nil
}

// close stops the sweep timer and closes the table file.
func (t *nodeTable) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	if t.file == nil {
		return nil
	}
	err := t.file.file.Close()
	t.file = nil
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNodeTable, err)
	}
	return nil
}

// RemoveNodeTable removes the node table of the mount whose staging
// directory is stagingDir, once the mount is gone for good (no kernel
// connection can ask for its node ids any more).
func RemoveNodeTable(stagingDir string) error {
	if err := os.RemoveAll(filepath.Join(stagingDir, nodeTableDir)); err != nil {
		return fmt.Errorf("s3fs: remove node table: %w", err)
	}
	return nil
}
