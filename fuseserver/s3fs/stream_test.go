package s3fs

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// TestStreamingUpload: parts of a sequentially written file go up while it
// is written; close completes the object with the right bytes.
func TestStreamingUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 17<<20+99)
	f, err := os.Create(e.path("stream.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:16<<20]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "parts uploaded before close", func() bool { return e.api.parts.Load() >= 2 })
	if _, err := f.Write(data[16<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := e.mustGet("stream.bin"); !bytes.Equal(got, data) {
		t.Fatalf("streamed object differs (%d bytes, want %d)", len(got), len(data))
	}
	if p := e.api.parts.Load(); p != 4 {
		t.Fatalf("%d parts uploaded, want 4", p)
	}
	if len(e.fsys.Pending()) != 0 {
		t.Fatalf("pending after close: %v", e.fsys.Pending())
	}
}

// TestStreamingRewrite: a write into a part already uploading breaks the
// stream; close uploads the staged file whole, with the rewrite.
func TestStreamingRewrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MultipartThreshold: 5 << 20, PartSize: MinPartSize}, true)
	data := randomBytes(t, 12<<20)
	f, err := os.Create(e.path("rewrite.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	patch := []byte("rewritten at the start")
	copy(data, patch)
	if _, err := f.WriteAt(patch, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := e.mustGet("rewrite.bin"); !bytes.Equal(got, data) {
		t.Fatalf("object after rewrite differs")
	}
	eventually(t, 10*time.Second, "broken stream aborted", func() bool { return e.api.aborts.Load() >= 1 })
}
