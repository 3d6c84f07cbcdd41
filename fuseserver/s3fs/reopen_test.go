package s3fs

import (
	"context"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// resentCtx is the context of a request the kernel sent again after a
// resume.
type resentCtx struct{ context.Context }

func (resentCtx) Resent() bool { return true }

// bridge serves f through go-fuse's node bridge without a kernel, with
// the file handle epoch of a server generation.
func bridge(f *FS, epoch uint32) fuse.RawFileSystem {
	opts := f.MountOptions(false)
	opts.FileHandleEpoch = epoch
	return fs.NewNodeFS(f.Root(), opts)
}

// TestReopen: a server that takes over resolves the node ids and reopens
// the file handles of the one before it on their first use: a read
// handle reads, and a write handle of a file that server wrote but did
// not upload extends the staged data its journal left.
func TestReopen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	e.put("f", []byte("hello world"))
	if err := e.fsys.ResetNodes(); err != nil {
		t.Fatal(err)
	}
	raw1 := bridge(e.fsys, 0)
	var fOut fuse.EntryOut
	if st := raw1.Lookup(nil, &fuse.InHeader{NodeId: 1}, "f", &fOut); st != fuse.OK {
		t.Fatalf("lookup f: %v", st)
	}
	var gOut fuse.CreateOut
	if st := raw1.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: 1}, Flags: syscall.O_WRONLY | syscall.O_CREAT, Mode: 0o644}, "g", &gOut); st != fuse.OK {
		t.Fatalf("create g: %v", st)
	}
	g := gOut.NodeId
	if n, st := raw1.Write(nil, &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: g}, Fh: gOut.Fh, Size: 3, Flags: syscall.O_WRONLY}, []byte("abc")); st != fuse.OK || n != 3 {
		t.Fatalf("write g: %d, %v", n, st)
	}
	// The first server dies here: g is staged, not uploaded.

	f2, err := New(e.api, Options{Bucket: testBucket, StagingDir: e.fsys.opts.StagingDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f2.Close() })
	raw2 := bridge(f2, 1)
	buf := make([]byte, 64)
	res, st := raw2.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: fOut.NodeId}, Fh: 5, Size: 64, Flags: syscall.O_RDONLY}, buf)
	if st != fuse.OK {
		t.Fatalf("read on an earlier handle: %v", st)
	}
	if data, _ := res.Bytes(buf); string(data) != "hello world" {
		t.Fatalf("read %q", data)
	}
	if n, st := raw2.Write(nil, &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: g}, Fh: gOut.Fh, Offset: 3, Size: 3, Flags: syscall.O_WRONLY}, []byte("def")); st != fuse.OK || n != 3 {
		t.Fatalf("write on an earlier handle: %d, %v", n, st)
	}
	if st := raw2.Flush(nil, &fuse.FlushIn{InHeader: fuse.InHeader{NodeId: g}, Fh: gOut.Fh}); st != fuse.OK {
		t.Fatalf("flush: %v", st)
	}
	if got := e.mustGet("g"); string(got) != "abcdef" {
		t.Fatalf("g in the bucket: %q, want the recovered abc and the new def", got)
	}
	raw2.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: g}, Fh: gOut.Fh})
	raw2.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: fOut.NodeId}, Fh: 5})
}

// TestResentRename: a resent RENAME that the earlier server carried out
// (the source is gone, the target there) succeeds; one it carried out in
// part (a directory rename that copied some objects) goes on; without the
// resend mark, or with a target another made, they fail as before.
func TestResentRename(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	_ = bridge(e.fsys, 0) // the tree needs a bridge
	root := e.fsys.root
	ctx := t.Context()
	again := resentCtx{ctx}

	e.put("b", []byte("moved")) // a -> b, done before the death
	if errno := root.Rename(ctx, "a", root, "b", 0); errno != syscall.ENOENT {
		t.Fatalf("rename of a missing source: %v, want ENOENT", errno)
	}
	if errno := root.Rename(again, "a", root, "b", 0); errno != 0 {
		t.Fatalf("resent rename, already done: %v", errno)
	}
	if errno := root.Rename(again, "a", root, "c", 0); errno != syscall.ENOENT {
		t.Fatalf("resent rename to a missing target: %v, want ENOENT", errno)
	}

	for _, k := range []string{"d/x", "d/y", "e/x"} { // d -> e, stopped after e/x
		e.put(k, []byte(k))
	}
	if errno := root.Rename(ctx, "d", root, "e", 0); errno != syscall.ENOTEMPTY {
		t.Fatalf("rename onto a non-empty directory: %v, want ENOTEMPTY", errno)
	}
	if errno := root.Rename(again, "d", root, "e", 0); errno != 0 {
		t.Fatalf("resent rename, half done: %v", errno)
	}
	if got := e.keys(""); len(got) != 3 || got[0] != "b" || got[1] != "e/x" || got[2] != "e/y" {
		t.Fatalf("bucket after the resent rename: %v", got)
	}

	for _, k := range []string{"p/x", "q/other"} {
		e.put(k, []byte(k))
	}
	if errno := root.Rename(again, "p", root, "q", 0); errno != syscall.ENOTEMPTY {
		t.Fatalf("resent rename onto another's directory: %v, want ENOTEMPTY", errno)
	}
}

// TestResentAppend: an O_APPEND write the kernel resends lands where the
// kernel put it the first time, not once more at the end.
func TestResentAppend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	ctx := t.Context()
	st := e.fsys.acquireState("log")
	h := newHandle(e.fsys, st, syscall.O_WRONLY|syscall.O_APPEND, -1)
	for _, w := range []struct {
		ctx  context.Context
		data string
		off  int64
	}{
		{ctx, "abc", 0},
		{resentCtx{ctx}, "abc", 0}, // written before the death, sent again
		{ctx, "def", 0},            // a stale kernel offset: appended
	} {
		if n, errno := h.Write(w.ctx, []byte(w.data), w.off); errno != 0 || n != 3 {
			t.Fatalf("write %q: %d, %v", w.data, n, errno)
		}
	}
	if errno := h.Flush(ctx); errno != 0 {
		t.Fatal(errno)
	}
	_ = h.Release(ctx)
	if got := e.mustGet("log"); string(got) != "abcdef" {
		t.Fatalf("log %q, want abcdef", got)
	}
}
