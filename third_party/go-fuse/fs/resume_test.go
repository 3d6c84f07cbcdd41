// Copyright 2026 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// These tests drive the bridge the way the kernel drives a server that
// took a connection over (fuse.MountOptions.Resume): with node IDs and
// file handles an earlier server issued.

const (
	resumeFile = 42 // node ID of a file LookupNode knows
	resumeDir  = 43 // and of a directory
)

type resumeNode struct {
	Inode
	lookups *atomic.Int32
	reopens *atomic.Int32
	flags   *atomic.Uint32 // of the last Reopen
	gate    chan struct{}  // Reopen waits for it, if set
}

func (n *resumeNode) LookupNode(ctx context.Context, id uint64, out *fuse.EntryOut) (*Inode, syscall.Errno) {
	n.lookups.Add(1)
	mode := uint32(syscall.S_IFREG)
	switch id {
	case resumeFile:
	case resumeDir:
		mode = syscall.S_IFDIR
	default:
		return nil, syscall.ENOENT
	}
	ch := &resumeNode{lookups: n.lookups, reopens: n.reopens, flags: n.flags, gate: n.gate}
	return n.NewInode(ctx, ch, StableAttr{Mode: mode, Ino: id}), 0
}

func (n *resumeNode) Reopen(ctx context.Context, flags uint32) (FileHandle, syscall.Errno) {
	if n.gate != nil {
		<-n.gate
	}
	n.reopens.Add(1)
	n.flags.Store(flags)
	if n.IsDir() {
		return nil, 0
	}
	return &resumeHandle{}, 0
}

func (n *resumeNode) Open(ctx context.Context, flags uint32) (FileHandle, uint32, syscall.Errno) {
	return &resumeHandle{}, 0, 0
}

func (n *resumeNode) Readdir(ctx context.Context) (DirStream, syscall.Errno) {
	return NewListDirStream([]fuse.DirEntry{{Name: "x", Ino: 44, Mode: syscall.S_IFREG}}), 0
}

type resumeHandle struct{}

func (h *resumeHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultData([]byte("data")), 0
}

func newResumeBridge(t *testing.T, opts Options) (*rawBridge, *resumeNode) {
	t.Helper()
	root := &resumeNode{lookups: new(atomic.Int32), reopens: new(atomic.Int32), flags: new(atomic.Uint32)}
	return NewNodeFS(root, &opts).(*rawBridge), root
}

func readFh(b *rawBridge, node, fh uint64, flags uint32) fuse.Status {
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: node}, Fh: fh, Size: 4, Flags: flags}
	res, st := b.Read(nil, in, make([]byte, 4))
	if res != nil {
		res.Done()
	}
	return st
}

func TestResumeUnknownNode(t *testing.T) {
	b, root := newResumeBridge(t, Options{ExternalNodeID: true})
	var out fuse.AttrOut
	if st := b.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &out); !st.Ok() || out.Ino != resumeFile {
		t.Fatalf("GETATTR of an earlier node ID: %v, ino %d", st, out.Ino)
	}
	if st := b.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &out); !st.Ok() || root.lookups.Load() != 1 {
		t.Fatalf("second GETATTR: %v, %d LookupNode calls", st, root.lookups.Load())
	}
	if st := b.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: 77}}, &out); st != fuse.Status(syscall.ESTALE) {
		t.Errorf("GETATTR of a node LookupNode does not know: %v, want ESTALE", st)
	}

	b2, _ := newResumeBridge(t, Options{})
	if st := b2.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &out); st != fuse.Status(syscall.ESTALE) {
		t.Errorf("unknown node ID without ExternalNodeID: %v, want ESTALE", st)
	}
}

func TestResumeUnknownNodeConcurrent(t *testing.T) {
	b, _ := newResumeBridge(t, Options{ExternalNodeID: true})
	var wg sync.WaitGroup
	inodes := make(chan *Inode, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out fuse.AttrOut
			if st := b.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &out); !st.Ok() {
				t.Errorf("GETATTR: %v", st)
			}
			n, _ := b.inode(context.Background(), resumeFile)
			inodes <- n
		}()
	}
	wg.Wait()
	close(inodes)
	first := <-inodes
	for n := range inodes {
		if n != first {
			t.Fatalf("two nodes for one node ID: %p and %p", first, n)
		}
	}
}

func TestResumeForget(t *testing.T) {
	b, _ := newResumeBridge(t, Options{ExternalNodeID: true})
	var out fuse.AttrOut
	if st := b.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &out); !st.Ok() {
		t.Fatal(st)
	}
	// The kernel looked the node up three times with the earlier
	// server; this one counted one.
	b.Forget(resumeFile, 3)
	if e, _ := b.ids.node(resumeFile, 0); e != nil {
		t.Errorf("node still registered after FORGET, lookupCount %d", e.lookupCount)
	}
	b.Forget(99, 1) // never seen
	if st := b.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &out); !st.Ok() {
		t.Errorf("GETATTR after the node was dropped: %v", st)
	}
}

func TestResumeFileHandle(t *testing.T) {
	b, root := newResumeBridge(t, Options{ExternalNodeID: true, FileHandleEpoch: 2})
	const earlier = 5 // a handle of epoch 0
	if st := readFh(b, resumeFile, earlier, syscall.O_RDONLY); !st.Ok() {
		t.Fatalf("READ with an earlier handle: %v", st)
	}
	if st := readFh(b, resumeFile, earlier, syscall.O_RDONLY); !st.Ok() {
		t.Fatalf("second READ: %v", st)
	}
	if n, f := root.reopens.Load(), root.flags.Load(); n != 1 || f != syscall.O_RDONLY {
		t.Errorf("%d Reopen calls, flags %#o; want 1, O_RDONLY", n, f)
	}
	var fl fuse.FlushIn
	fl.NodeId, fl.Fh = resumeFile, 6
	if st := b.Flush(nil, &fl); !st.Ok() || root.flags.Load() != syscall.O_RDWR {
		t.Errorf("FLUSH with an earlier handle: %v, Reopen flags %#o, want O_RDWR", st, root.flags.Load())
	}

	var open fuse.OpenOut
	if st := b.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: resumeFile}}, &open); !st.Ok() || open.Fh>>32 != 2 {
		t.Fatalf("OPEN: %v, fh %#x, want epoch 2", st, open.Fh)
	}
	if st := readFh(b, resumeFile, open.Fh, 0); !st.Ok() {
		t.Errorf("READ with a new handle: %v", st)
	}
	if st := readFh(b, resumeFile, 2<<32|999, 0); st != fuse.Status(syscall.EBADF) {
		t.Errorf("READ with a handle of our epoch never issued: %v, want EBADF", st)
	}

	for _, fh := range []uint64{earlier, 6, 7, open.Fh} { // 7 was never used
		b.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: resumeFile}, Fh: fh})
	}
	if len(b.ids.adopted) != 0 {
		t.Errorf("adopted handles left after RELEASE: %v", b.ids.adopted)
	}
	b.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: 99}, Fh: 8})
}

func TestResumeFileHandleConcurrent(t *testing.T) {
	b, root := newResumeBridge(t, Options{ExternalNodeID: true, FileHandleEpoch: 1})
	root.gate = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan fuse.Status, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- readFh(b, resumeFile, 3, syscall.O_RDONLY)
		}()
	}
	close(root.gate)
	wg.Wait()
	close(errs)
	for st := range errs {
		if !st.Ok() {
			t.Errorf("READ: %v", st)
		}
	}
	if n := root.reopens.Load(); n != 1 {
		t.Errorf("%d Reopen calls for one handle, want 1", n)
	}
}

func TestResumeDirHandle(t *testing.T) {
	b, root := newResumeBridge(t, Options{ExternalNodeID: true, FileHandleEpoch: 1})
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: resumeDir}, Fh: 4, Size: 4096}
	out := fuse.NewDirEntryList(make([]byte, 4096), 0)
	if st := b.ReadDir(nil, in, out); !st.Ok() {
		t.Fatalf("READDIR with an earlier handle: %v", st)
	}
	if len(out.Bytes()) == 0 || root.reopens.Load() != 1 {
		t.Errorf("READDIR returned %d bytes after %d Reopen calls", len(out.Bytes()), root.reopens.Load())
	}
	b.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: resumeDir}, Fh: 4})
}
