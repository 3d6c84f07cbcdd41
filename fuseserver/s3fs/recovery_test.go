package s3fs

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hanwen/go-fuse/v2/fuse"

	"rekey.dev/rekey/fuseserver/journal"
)

func TestDecideRecovery(t *testing.T) {
	absent, known := &journal.Base{Absent: true}, &journal.Base{ETag: "e1"}
	for _, c := range []struct {
		name string
		x    recoveryFacts
		want verdict
		why  string // a part of the reason of a conflict
	}{
		{"new file, still absent", recoveryFacts{base: absent}, verdictUpload, ""},
		{"unknown base, absent", recoveryFacts{}, verdictUpload, ""},
		{"deleted by another client", recoveryFacts{base: known}, verdictConflict, "deleted"},
		{"base unchanged", recoveryFacts{base: known, exists: true, baseMatches: true}, verdictUpload, ""},
		{"already uploaded", recoveryFacts{base: absent, exists: true, stagedMatches: true}, verdictUploaded, ""},
		{"own earlier upload over a new file", recoveryFacts{base: absent, exists: true, ours: true, oursNotNewer: true}, verdictUpload, ""},
		{"own earlier upload over a known base", recoveryFacts{base: known, exists: true, ours: true, oursNotNewer: true}, verdictUpload, ""},
		{"own newer upload", recoveryFacts{base: absent, exists: true, ours: true}, verdictConflict, "newer data written through this mount"},
		{"unmarked object since the upload began", recoveryFacts{base: absent, exists: true, uploadedSince: true}, verdictUpload, ""},
		{"unknown base, older object", recoveryFacts{exists: true, modifiedBeforeDirty: true}, verdictUpload, ""},
		{"unknown base, newer object", recoveryFacts{exists: true}, verdictConflict, "written by another client"},
		{"created by another client", recoveryFacts{base: absent, exists: true}, verdictConflict, "created"},
		{"changed by another client", recoveryFacts{base: known, exists: true}, verdictConflict, "changed"},
		{"changed by another client, old enough", recoveryFacts{base: known, exists: true, modifiedBeforeDirty: true}, verdictConflict, "changed"},
	} {
		v, why := decideRecovery(c.x)
		if v != c.want || !strings.Contains(why, c.why) || (c.want != verdictConflict && why != "") {
			t.Errorf("%s: %v %q, want %v with %q", c.name, v, why, c.want, c.why)
		}
	}
}

// TestRecoveryKnowsOwnUploads: an object this mount uploaded from an
// older staging of the key (an upload that ended after the application
// re-created the file, or whose end no record shows) is not another
// client's write: recovery of the newer staging uploads over it. An object
// this mount wrote from newer data is not overwritten by an older staging,
// and one another mount wrote is a conflict. Before writer marks, the first
// case was retained as "another client created the object" (the kill
// matrix, TestResumeUnderLoad, once in about sixteen runs).
func TestRecoveryKnowsOwnUploads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	ctx := t.Context()
	staging := e.fsys.opts.StagingDir

	// meta is the metadata of an upload of st now; upload puts data as
	// key with it, as an upload of st that raced with the application
	// would have (the upload reads it before it starts).
	meta := func(st *fileState) map[string]string {
		st.mu.Lock()
		defer st.mu.Unlock()
		return e.fsys.writerMetaLocked(st)
	}
	upload := func(key string, meta map[string]string, data string) {
		t.Helper()
		if _, err := e.fsys.putFile(ctx, key, strings.NewReader(data), int64(len(data)), meta); err != nil {
			t.Fatal(err)
		}
	}
	write := func(st *fileState, data string) {
		t.Helper()
		if _, err := e.fsys.writeAt(ctx, st, []byte(data), 0, false); err != nil {
			t.Fatal(err)
		}
	}

	// a: older staging uploaded after the newer one was made.
	older, err := e.fsys.createState("a")
	if err != nil {
		t.Fatal(err)
	}
	write(older, "old")
	olderMeta := meta(older)     // its upload begins
	time.Sleep(time.Millisecond) // distinct DirtySince on coarse clocks
	newer, err := e.fsys.createState("a")
	if err != nil {
		t.Fatal(err)
	}
	write(newer, "new data")
	upload("a", olderMeta, "old") // and ends

	// b: a newer staging uploaded, an older one whose deleted mark was lost.
	stale, err := e.fsys.createState("b")
	if err != nil {
		t.Fatal(err)
	}
	write(stale, "stale")
	staleRec := stale.rec.path
	staleRecord, err := os.ReadFile(staleRec)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	fresh, err := e.fsys.createState("b")
	if err != nil {
		t.Fatal(err)
	}
	write(fresh, "fresh")
	if err := e.fsys.sync(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(staleRec, staleRecord, 0o600); err != nil { // the deleted mark never reached the disk
		t.Fatal(err)
	}

	// c: another mount of the bucket wrote the object.
	c, err := e.fsys.createState("c")
	if err != nil {
		t.Fatal(err)
	}
	write(c, "mine")
	other := newEnvOn(t, e)
	cs, err := other.createState("c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.writeAt(ctx, cs, []byte("theirs"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := other.sync(ctx, cs); err != nil {
		t.Fatal(err)
	}

	// The server dies; a new one recovers the staging directory.
	var retained []Retained
	done := make(chan struct{})
	f2, err := New(e.api, Options{Bucket: testBucket, StagingDir: staging, Logger: e.fsys.opts.Logger, OnRetained: func(rs []Retained) {
		retained = append(retained, rs...)
		if len(retained) == 2 {
			close(done)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f2.Close() })
	eventually(t, 20*time.Second, "a uploaded by recovery", func() bool {
		b, err := e.get("a")
		return err == nil && string(b) == "new data"
	})
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("retained: %+v, want b and c", retained)
	}
	for _, r := range retained {
		switch r.Key {
		case "b":
			if !strings.Contains(r.Reason, "newer data written through this mount") {
				t.Errorf("b retained for %q", r.Reason)
			}
		case "c":
			if !strings.Contains(r.Reason, "another client") {
				t.Errorf("c retained for %q", r.Reason)
			}
		default:
			t.Errorf("retained %+v", r)
		}
	}
	if got := e.mustGet("b"); string(got) != "fresh" {
		t.Errorf("b = %q: an older staging overwrote newer data", got)
	}
	if got := e.mustGet("c"); string(got) != "theirs" {
		t.Errorf("c = %q: recovery overwrote another mount's object", got)
	}
	out, err := e.admin.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("a")})
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := journal.ParseWriterMark(out.Metadata[journal.WriterMetadataKey]); !ok || m.ID != e.fsys.writer {
		t.Errorf("a's writer mark %q, want this mount's id %s", out.Metadata[journal.WriterMetadataKey], e.fsys.writer)
	}
}

// newEnvOn is another mount of e's bucket: its own staging directory, so
// its own writer id.
func newEnvOn(t *testing.T, e *env) *FS {
	t.Helper()
	f, err := New(e.api, Options{Bucket: testBucket, StagingDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// TestRetainedHandleFails: a file handle held across a server restart
// whose staged data recovery retained (another client changed the object)
// fails every further write, read and close with EIO: it never goes on
// writing into the other client's object, and its close does not report
// an upload that did not happen.
func TestRetainedHandleFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	e.put("f", []byte("original"))
	if err := e.fsys.ResetNodes(); err != nil {
		t.Fatal(err)
	}
	raw1 := bridge(e.fsys, 0)
	var out fuse.EntryOut
	if st := raw1.Lookup(nil, &fuse.InHeader{NodeId: 1}, "f", &out); st != fuse.OK {
		t.Fatalf("lookup: %v", st)
	}
	var open fuse.OpenOut
	if st := raw1.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Flags: syscall.O_RDWR}, &open); st != fuse.OK {
		t.Fatalf("open: %v", st)
	}
	if n, st := raw1.Write(nil, &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Fh: open.Fh, Size: 4}, []byte("MINE")); st != fuse.OK || n != 4 {
		t.Fatalf("write: %d, %v", n, st)
	}
	// The server dies; another client overwrites f; a new server starts.
	e.put("f", []byte("someone else's"))
	retained := make(chan Retained, 1)
	f2, err := New(e.api, Options{Bucket: testBucket, StagingDir: e.fsys.opts.StagingDir,
		OnRetained: func(rs []Retained) { retained <- rs[0] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f2.Close() })
	select {
	case r := <-retained:
		if r.Key != "f" {
			t.Fatalf("retained %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the conflict was not reported")
	}
	raw2 := bridge(f2, 1)
	in := fuse.InHeader{NodeId: out.NodeId}
	if _, st := raw2.Write(nil, &fuse.WriteIn{InHeader: in, Fh: open.Fh, Offset: 4, Size: 4}, []byte("more")); st != fuse.Status(syscall.EIO) {
		t.Errorf("write on the retained file's handle: %v, want EIO", st)
	}
	buf := make([]byte, 16)
	if _, st := raw2.Read(nil, &fuse.ReadIn{InHeader: in, Fh: open.Fh, Size: 16}, buf); st != fuse.Status(syscall.EIO) {
		t.Errorf("read on the retained file's handle: %v, want EIO", st)
	}
	if st := raw2.Flush(nil, &fuse.FlushIn{InHeader: in, Fh: open.Fh}); st != fuse.Status(syscall.EIO) {
		t.Errorf("close of the retained file's handle: %v, want EIO", st)
	}
	raw2.Release(nil, &fuse.ReleaseIn{InHeader: in, Fh: open.Fh})
	if got := e.mustGet("f"); string(got) != "someone else's" {
		t.Errorf("f = %q", got)
	}
	// A new open reads the bucket.
	var out2 fuse.EntryOut
	if st := raw2.Lookup(nil, &fuse.InHeader{NodeId: 1}, "f", &out2); st != fuse.OK {
		t.Fatalf("lookup: %v", st)
	}
	var open2 fuse.OpenOut
	if st := raw2.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: out2.NodeId}, Flags: syscall.O_RDONLY}, &open2); st != fuse.OK {
		t.Fatalf("open: %v", st)
	}
	res, st := raw2.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: out2.NodeId}, Fh: open2.Fh, Size: 64}, make([]byte, 64))
	if st != fuse.OK {
		t.Fatalf("read after a new open: %v", st)
	}
	if b, _ := res.Bytes(make([]byte, 64)); string(b) != "someone else's" {
		t.Errorf("new open reads %q", b)
	}
}
