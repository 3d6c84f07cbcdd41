package journal

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWriterID: the first call makes an id, later ones read it; a torn id
// file is replaced and says so; Prune removes the id only with the last
// kept entry.
func TestWriterID(t *testing.T) {
	dir := t.TempDir()
	id, replaced, err := WriterID(dir)
	if err != nil || replaced || !validWriterID(id) {
		t.Fatalf("first WriterID: %q, %v, %v", id, replaced, err)
	}
	again, replaced, err := WriterID(dir)
	if err != nil || replaced || again != id {
		t.Fatalf("second WriterID: %q (want %q), %v, %v", again, id, replaced, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, WriterDir, writerFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("id file: %v, %v", fi, err)
	}

	if err := os.WriteFile(filepath.Join(dir, WriterDir, writerFile), []byte("0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh, replaced, err := WriterID(dir)
	if err != nil || !replaced || fresh == id || !validWriterID(fresh) {
		t.Fatalf("WriterID over a torn file: %q, %v, %v", fresh, replaced, err)
	}

	// Scan does not take the id for staged data.
	entries, _, err := Scan(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("Scan: %+v, %v", entries, err)
	}

	// Kept data keeps the id; without it, Prune removes the id and dir.
	data := filepath.Join(dir, NewName())
	if err := os.WriteFile(data, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(RecordPath(data), Record{Bucket: "b", Key: "k", State: StateDirty, DirtySince: time.Now()}, false); err != nil {
		t.Fatal(err)
	}
	if kept, err := Prune(dir); err != nil || len(kept) != 1 {
		t.Fatalf("Prune with dirty data: %+v, %v", kept, err)
	}
	if _, err := os.Stat(filepath.Join(dir, WriterDir, writerFile)); err != nil {
		t.Fatalf("Prune removed the writer id while data is kept: %v", err)
	}
	if err := Write(RecordPath(data), Record{Bucket: "b", Key: "k", State: StateUploaded}, false); err != nil {
		t.Fatal(err)
	}
	if kept, err := Prune(dir); err != nil || len(kept) != 0 {
		t.Fatalf("Prune with uploaded data: %+v, %v", kept, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("staging directory after the last Prune: %v", err)
	}
}

func TestWriterMark(t *testing.T) {
	m := WriterMark{ID: "0123456789abcdef0123456789abcdef", DirtySince: time.Unix(1700000000, 123456789)}
	got, ok := ParseWriterMark(m.String())
	if !ok || got.ID != m.ID || !got.DirtySince.Equal(m.DirtySince) {
		t.Fatalf("round trip of %s: %+v, %v", m, got, ok)
	}
	for _, bad := range []string{"", "x", m.ID, m.ID + ".", m.ID + ".-1", m.ID + ".1e9", "0123." + "5", "zz23456789abcdef0123456789abcdef.5"} {
		if _, ok := ParseWriterMark(bad); ok {
			t.Errorf("ParseWriterMark(%q) accepted", bad)
		}
	}
}
