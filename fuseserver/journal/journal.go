// Package journal is the on-disk format of a FUSE server's staging
// directory: every staged file "stage-<id>" has a record "stage-<id>.journal"
// beside it that says which object the data belongs to and whether the
// bucket has it. A later server process on the same staging directory
// uploads what is dirty (s3fs recovery); the supervisor deletes only what
// is known to be uploaded (Prune). This file is the one place the format is
// defined; docs/fuse-server.md describes it for operators.
//
// A record is JSON, written to "<record>.tmp" and renamed over the record,
// so a reader sees the old record or the new one, never a mix. Records
// that matter across a node reboot (the data became dirty, parts of it were
// released from staging) are fsynced with their directory before the
// staging file changes; the others are not.
//
// Nothing here deletes data that a record does not declare uploaded: a
// staging file without a record (version 0.1 wrote none), a record of an
// unknown version or with bad fields is kept as it is.
package journal

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Version is the version this code writes.
const Version = 1

// SupportedVersions are the versions Parse accepts.
var SupportedVersions = []int{1}

// Names in a staging directory.
const (
	// DataPrefix starts the name of every staging file.
	DataPrefix = "stage-"
	// RecordSuffix ends the record beside a staging file.
	RecordSuffix = ".journal"
	// TempSuffix ends a record being written (never read; removable).
	TempSuffix = ".tmp"
)

// ErrInvalid is wrapped by every error about a record's content.
var ErrInvalid = errors.New("journal: invalid record")

// State is the upload state of a staging file.
type State string

// States of a record.
const (
	// StateDirty: the staging file holds data the bucket may not have.
	StateDirty State = "dirty"
	// StateUploaded: the bucket has every byte of the staging file.
	StateUploaded State = "uploaded"
	// StateDeleted: the application unlinked or overwrote the file; its
	// data is not to be uploaded.
	StateDeleted State = "deleted"
)

// Record describes one staging file.
type Record struct {
	// Version is the format version (SupportedVersions).
	Version int `json:"version"`
	// Bucket and Prefix are where the mount serves from; Key is the object
	// key relative to Prefix (the object is Prefix+Key).
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix,omitempty"`
	Key    string `json:"key"`
	// State is dirty, uploaded or deleted.
	State State `json:"state"`
	// Size and Generation are the staged size and content generation when
	// the record was written. Writes after that change the staging file
	// without a new record while the state stays the same: the staging
	// file's own length is the size of the data.
	Size       int64  `json:"size"`
	Generation uint64 `json:"generation"`
	// DirtySince is when the staged data first differed from the bucket
	// (node clock); zero unless dirty.
	DirtySince time.Time `json:"dirtySince,omitzero"`
	// Base is the object the staged data replaces, as this mount last saw
	// it; nil if unknown.
	Base *Base `json:"base,omitempty"`
	// Multipart is the streamed multipart upload of the data once parts of
	// it were released from the staging file; nil otherwise.
	Multipart *Multipart `json:"multipart,omitempty"`
	// UploadStarted is when the last upload of the data to Key began (node
	// clock) whose end the record does not show yet; zero if none. A
	// process that dies between the bucket taking the upload and the
	// record saying so leaves an object that matches neither Base nor (if
	// the data was written to meanwhile) the staging file: an object last
	// modified since UploadStarted is taken as this mount's own upload, not
	// another client's.
	UploadStarted time.Time `json:"uploadStarted,omitzero"`
	// Updated is when the record was written.
	Updated time.Time `json:"updated"`
}

// Base identifies the object a staging file was based on.
type Base struct {
	// ETag of the object, if it existed.
	ETag string `json:"etag,omitempty"`
	// Absent: the object did not exist (a new file).
	Absent bool `json:"absent,omitempty"`
}

// Multipart is a streamed upload whose acknowledged parts may be missing
// from the staging file (punched out once the server had them).
type Multipart struct {
	UploadID string `json:"uploadId"`
	// PartSize is the size of every part but the last; part n holds bytes
	// [(n-1)*PartSize, n*PartSize).
	PartSize int64 `json:"partSize"`
	// Acknowledged are the parts the server answered, by number; their
	// bytes may be missing from the staging file.
	Acknowledged []Part `json:"acknowledged"`
}

// Part is one acknowledged part.
type Part struct {
	Number int32  `json:"number"`
	ETag   string `json:"etag"`
}

// Limits of the format.
const (
	maxKeyLen   = 1024
	maxParts    = 10000
	minPartSize = 5 << 20
)

// Parse decodes and validates a record. An unknown version, an unknown
// field or a bad value is an error wrapping ErrInvalid.
func Parse(b []byte) (Record, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return Record{}, fmt.Errorf("%w: not JSON: %w", ErrInvalid, err)
	}
	if probe.Version == nil {
		return Record{}, fmt.Errorf("%w: no version", ErrInvalid)
	}
	if !slices.Contains(SupportedVersions, *probe.Version) {
		return Record{}, fmt.Errorf("%w: unsupported version %d (this build reads %v)", ErrInvalid, *probe.Version, SupportedVersions)
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// Validate checks the fields of r.
func (r Record) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !slices.Contains(SupportedVersions, r.Version) {
		bad("unsupported version %d", r.Version)
	}
	if r.Bucket == "" {
		bad("no bucket")
	}
	if r.Key == "" || len(r.Key) > maxKeyLen || strings.HasPrefix(r.Key, "/") || strings.HasSuffix(r.Key, "/") ||
		slices.Contains(strings.Split(r.Key, "/"), "..") || strings.ContainsRune(r.Key, 0) {
		bad("bad key %q", r.Key)
	}
	switch r.State {
	case StateDirty, StateUploaded, StateDeleted:
	default:
		bad("unknown state %q", r.State)
	}
	if r.Size < 0 {
		bad("negative size")
	}
	if r.Base != nil && r.Base.Absent && r.Base.ETag != "" {
		bad("base both absent and with an etag")
	}
	if m := r.Multipart; m != nil {
		if m.UploadID == "" {
			bad("multipart without uploadId")
		}
		if m.PartSize < minPartSize {
			bad("multipart partSize %d below %d", m.PartSize, minPartSize)
		}
		last := int32(0)
		for _, p := range m.Acknowledged {
			if p.Number <= last || p.Number > maxParts || p.ETag == "" {
				bad("bad acknowledged part %d", p.Number)
				break
			}
			last = p.Number
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// Read reads and parses the record at path.
func Read(path string) (Record, error) {
	b, err := os.ReadFile(path) //nolint:gosec // a path in the staging directory
	if err != nil {
		return Record{}, fmt.Errorf("journal: %w", err)
	}
	r, err := Parse(b)
	if err != nil {
		return Record{}, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return r, nil
}

// Write writes r to path (write to path+TempSuffix, rename). With durable
// the record and its directory are fsynced, so it survives a node reboot.
func Write(path string, r Record, durable bool) error {
	if r.Version == 0 {
		r.Version = Version
	}
	if err := r.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	tmp := path + TempSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600) //nolint:gosec // a path in the staging directory
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && durable {
		err = SyncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("journal: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir) //nolint:gosec // the staging directory
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", dir, err)
	}
	return nil
}

// NewName returns a fresh staging file name, "stage-" and 16 hex digits.
func NewName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return DataPrefix + hex.EncodeToString(b[:])
}

// RecordPath is the record of the staging file at dataPath.
func RecordPath(dataPath string) string { return dataPath + RecordSuffix }

// Entry is one staging file or record found by Scan.
type Entry struct {
	// Name is the staging file's name ("stage-…").
	Name string
	// DataPath and RecordPath are the paths of the data and its record.
	DataPath, RecordPath string
	// HasData and HasRecord say which of the two exist.
	HasData, HasRecord bool
	// DataSize is the staging file's length (HasData).
	DataSize int64
	// Record is the parsed record (HasRecord and Err nil).
	Record Record
	// Err says why the record could not be used; the entry is then kept.
	Err error
}

// Removable reports whether the entry holds nothing that is not uploaded:
// a record saying uploaded or deleted, or a record without data.
func (e Entry) Removable() bool {
	if e.Err != nil {
		return false
	}
	if !e.HasData {
		return e.HasRecord
	}
	return e.HasRecord && (e.Record.State == StateUploaded || e.Record.State == StateDeleted)
}

// Describe names the entry for a report: the object key if known, else
// the staging file and why it is not recognised. It holds no secret.
func (e Entry) Describe() string {
	switch {
	case e.Err != nil:
		return e.Name + " (unreadable record)"
	case !e.HasRecord:
		return e.Name + " (no record)"
	default:
		return e.Record.Prefix + e.Record.Key
	}
}

// Scan lists the staging files and records of dir, sorted by name. A file
// that is neither is an entry without a record (kept); records being
// written (TempSuffix) are left out and listed in temps, for their owner
// to remove. Subdirectories are ignored.
func Scan(dir string) (entries []Entry, temps []string, err error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: scan: %w", err)
	}
	byName := map[string]*Entry{}
	get := func(name string) *Entry {
		e := byName[name]
		if e == nil {
			e = &Entry{Name: name, DataPath: filepath.Join(dir, name), RecordPath: RecordPath(filepath.Join(dir, name))}
			byName[name] = e
		}
		return e
	}
	for _, de := range des {
		n := de.Name()
		if de.IsDir() {
			continue
		}
		switch {
		case !strings.HasPrefix(n, DataPrefix) || !de.Type().IsRegular():
			get(n).HasData = true // not ours: kept, reported without a record
		case strings.HasSuffix(n, TempSuffix):
			temps = append(temps, filepath.Join(dir, n))
		case strings.HasSuffix(n, RecordSuffix):
			get(strings.TrimSuffix(n, RecordSuffix)).HasRecord = true
		default:
			e := get(n)
			e.HasData = true
			if fi, err := de.Info(); err == nil {
				e.DataSize = fi.Size()
			}
		}
	}
	for _, e := range byName {
		if e.HasRecord {
			e.Record, e.Err = Read(e.RecordPath)
		}
		entries = append(entries, *e)
	}
	sort.Slice(entries, func(a, b int) bool { return entries[a].Name < entries[b].Name })
	return entries, temps, nil
}

// Remove removes the entry's data, then its record (so that a crash in
// between leaves a record without data, which is removable, never data
// without a record).
func Remove(e Entry) error {
	if e.HasData {
		if err := os.Remove(e.DataPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("journal: %w", err)
		}
	}
	if err := os.Remove(e.RecordPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// Prune removes from dir every entry that is Removable and every record
// being written, then dir itself if nothing else is left in it. It returns
// the entries it kept: data the bucket may not have, or that it cannot
// tell. A dir that does not exist is empty.
func Prune(dir string) (kept []Entry, err error) {
	entries, temps, err := Scan(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, t := range temps {
		if err := os.Remove(t); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, e := range entries {
		if !e.Removable() {
			kept = append(kept, e)
			continue
		}
		if err := Remove(e); err != nil {
			errs = append(errs, err)
		}
	}
	// The writer id goes with the last kept entry: a later server of the
	// mount needs it to recognise its own uploads of kept data.
	if len(kept) == 0 {
		if err := removeWriter(dir); err != nil {
			errs = append(errs, err)
		}
	}
	// Remove fails on a directory that is not empty (kept entries, or
	// files this package does not know): those stay.
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && len(kept) == 0 {
		if des, rerr := os.ReadDir(dir); rerr != nil || len(des) == 0 {
			errs = append(errs, fmt.Errorf("journal: %w", err))
		}
	}
	if len(errs) > 0 {
		return kept, fmt.Errorf("journal: prune %s: %w", dir, errors.Join(errs...))
	}
	return kept, nil
}
