package s3fs

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

// TestSequentialReadahead reads an object of several chunks sequentially
// and checks the bytes and that read-ahead used chunk-sized requests.
func TestSequentialReadahead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	data := randomBytes(t, 3*readChunkSize+12345)
	e.put("seq.bin", data)
	f, err := os.Open(e.path("seq.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := e.api.gets.Load()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("sequential read: %d bytes, content differs", len(got))
	}
	// 1 direct read + ~4 chunks (+ the kernel's own reordering); far fewer
	// than one per 128 KiB kernel read.
	if gets := e.api.gets.Load() - before; gets > 12 {
		t.Fatalf("sequential read of %d bytes took %d GETs", len(data), gets)
	}
	if n := len(e.fsys.readBufs.sem); n != 0 {
		t.Logf("%d read-ahead buffers still out right after the read", n)
	}
}

// TestRandomReads checks random reads return the right bytes and fetch
// about what they ask for (no chunk read-ahead).
func TestRandomReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	data := randomBytes(t, 4*readChunkSize)
	e.put("rand.bin", data)
	f, err := os.Open(e.path("rand.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	for range 50 {
		off := rng.Int64N(int64(len(data)-len(buf))) &^ 4095
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
			t.Fatalf("random read at %d: wrong bytes", off)
		}
	}
	if out := len(e.fsys.readBufs.sem); out > readAheadChunks {
		t.Fatalf("random reads hold %d read-ahead buffers", out)
	}
}

// TestReadaheadBounded: many sequential readers at once stay within the
// FS-wide buffer budget and still read the right bytes.
func TestReadaheadBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{ReadAheadMemory: 3 * readChunkSize}, true)
	data := randomBytes(t, 2*readChunkSize+1)
	e.put("a.bin", data)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			got, err := os.ReadFile(e.path("a.bin"))
			if err == nil && !bytes.Equal(got, data) {
				err = io.ErrUnexpectedEOF
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent sequential read: %v", err)
		}
	}
	if out := len(e.fsys.readBufs.sem); out > 3 {
		t.Fatalf("%d buffers out, budget 3", out)
	}
}
