package journal

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestFixtureV1 reads the checked-in records of format version 1: a
// change of the format that breaks them breaks what nodes have on disk.
func TestFixtureV1(t *testing.T) {
	r, err := Read(filepath.Join("testdata", "v1-dirty-multipart.journal"))
	if err != nil {
		t.Fatal(err)
	}
	want := Record{Version: 1, Bucket: "bucket", Prefix: "team/", Key: "logs/big.bin", State: StateDirty,
		Size: 17825792, Generation: 12, DirtySince: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Base: &Base{Absent: true},
		Multipart: &Multipart{UploadID: "2~abcdef", PartSize: 5 << 20, Acknowledged: []Part{
			{Number: 1, ETag: `"0cc175b9c0f1b6a831c399e269772661"`}, {Number: 2, ETag: `"92eb5ffee6ae2fec3ad71c777531578f"`}}},
		Updated: time.Date(2026, 1, 2, 3, 4, 9, 0, time.UTC)}
	if d := cmp.Diff(want, r); d != "" {
		t.Fatalf("fixture (-want +got):\n%s", d)
	}
	up, err := Read(filepath.Join("testdata", "v1-uploaded.journal"))
	if err != nil {
		t.Fatal(err)
	}
	if up.State != StateUploaded || up.Base == nil || up.Base.ETag == "" || up.Prefix != "" {
		t.Fatalf("uploaded fixture: %+v", up)
	}
	// What Write writes reads back the same.
	path := filepath.Join(t.TempDir(), "stage-x"+RecordSuffix)
	if err := Write(path, want, true); err != nil {
		t.Fatal(err)
	}
	again, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, again); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

// TestParseRefuses: an unknown version, an unknown field or a bad value is
// an error wrapping ErrInvalid, never a guess.
func TestParseRefuses(t *testing.T) {
	good := `"bucket":"b","key":"k","state":"dirty","size":1,"generation":1,"updated":"2026-01-02T03:04:05Z"`
	for name, in := range map[string]string{
		"not json":        `{`,
		"no version":      `{` + good + `}`,
		"version 0":       `{"version":0,` + good + `}`,
		"version 2":       `{"version":2,` + good + `}`,
		"unknown field":   `{"version":1,"extra":1,` + good + `}`,
		"bad state":       `{"version":1,"bucket":"b","key":"k","state":"maybe","size":1,"generation":1}`,
		"no key":          `{"version":1,"bucket":"b","key":"","state":"dirty","size":1,"generation":1}`,
		"dotdot key":      `{"version":1,"bucket":"b","key":"a/../b","state":"dirty","size":1,"generation":1}`,
		"negative size":   `{"version":1,"bucket":"b","key":"k","state":"dirty","size":-1,"generation":1}`,
		"small part":      `{"version":1,` + good + `,"multipart":{"uploadId":"u","partSize":1,"acknowledged":[]}}`,
		"unordered parts": `{"version":1,` + good + `,"multipart":{"uploadId":"u","partSize":5242880,"acknowledged":[{"number":2,"etag":"x"},{"number":1,"etag":"y"}]}}`,
		"part no etag":    `{"version":1,` + good + `,"multipart":{"uploadId":"u","partSize":5242880,"acknowledged":[{"number":1,"etag":""}]}}`,
	} {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse = %v, want ErrInvalid", name, err)
		}
	}
	b, err := os.ReadFile(filepath.Join("testdata", "v99-unknown.journal"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(b); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unsupported version 99") {
		t.Fatalf("v99 fixture: %v, want unsupported version", err)
	}
}

// TestPruneKeeps: Prune removes uploaded and deleted entries and records
// without data, and keeps dirty data, data without a record and data whose
// record is unreadable (an unknown version) — and the directory with them.
func TestPruneKeeps(t *testing.T) {
	dir := t.TempDir()
	put := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(name string, st State) {
		t.Helper()
		r := Record{Bucket: "b", Key: name + ".key", State: st, Updated: time.Now()}
		if err := Write(filepath.Join(dir, name+RecordSuffix), r, false); err != nil {
			t.Fatal(err)
		}
	}
	put("stage-clean", "x")
	rec("stage-clean", StateUploaded)
	put("stage-gone", "x")
	rec("stage-gone", StateDeleted)
	rec("stage-norecorddata", StateDirty) // record, no data
	put("stage-dirty", "data")
	rec("stage-dirty", StateDirty)
	put("stage-1234567", "legacy data") // 0.1: no record
	put("stage-future", "future data")
	fixture, err := os.ReadFile(filepath.Join("testdata", "v99-unknown.journal"))
	if err != nil {
		t.Fatal(err)
	}
	put("stage-future"+RecordSuffix, string(fixture))
	put("stage-half"+RecordSuffix+TempSuffix, "{")

	kept, err := Prune(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range kept {
		names = append(names, e.Name+"="+e.Describe())
	}
	want := []string{"stage-1234567=stage-1234567 (no record)", "stage-dirty=stage-dirty.key", "stage-future=stage-future (unreadable record)"}
	if !slices.Equal(names, want) {
		t.Fatalf("kept %q, want %q", names, want)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, de := range left {
		files = append(files, de.Name())
	}
	wantFiles := []string{"stage-1234567", "stage-dirty", "stage-dirty.journal", "stage-future", "stage-future.journal"}
	if !slices.Equal(files, wantFiles) {
		t.Fatalf("left %q, want %q", files, wantFiles)
	}
	// The unknown version's record is byte for byte what it was.
	if b, _ := os.ReadFile(filepath.Join(dir, "stage-future"+RecordSuffix)); string(b) != string(fixture) {
		t.Fatal("the record of an unknown version was changed")
	}

	// Once only uploaded data is left, the directory goes too.
	for _, n := range []string{"stage-1234567", "stage-dirty", "stage-dirty.journal", "stage-future", "stage-future.journal"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	put("stage-clean", "x")
	rec("stage-clean", StateUploaded)
	if kept, err := Prune(dir); err != nil || len(kept) != 0 {
		t.Fatalf("Prune = %v, %v", kept, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory still there: %v", err)
	}
	if kept, err := Prune(dir); err != nil || kept != nil {
		t.Fatalf("Prune of a missing dir = %v, %v", kept, err)
	}
}
