package fuseresume

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// tree serves the directory dir. Node IDs are the inode numbers of the
// backing files (fs.Options.ExternalNodeID), so every server process
// gives a file the same ID. Entries stay valid in the kernel for an hour
// and attributes not at all: after a resume the kernel keeps using the
// node IDs of the first server, and every stat reaches the server.
type tree struct {
	dir    string
	report func(event)
	// gate names a file whose reads never return, as if its backend
	// hung: the request stays with the server until it is killed.
	gate string
}

type node struct {
	gofs.Inode
	t   *tree
	rel string // path below t.dir, "" for the root
}

var (
	_ gofs.NodeLookuper    = (*node)(nil)
	_ gofs.NodeLookupNoder = (*node)(nil)
	_ gofs.NodeReaddirer   = (*node)(nil)
	_ gofs.NodeGetattrer   = (*node)(nil)
	_ gofs.NodeSetattrer   = (*node)(nil)
	_ gofs.NodeOpener      = (*node)(nil)
	_ gofs.NodeReopener    = (*node)(nil)
	_ gofs.NodeCreater     = (*node)(nil)
	_ gofs.NodeUnlinker    = (*node)(nil)
	_ gofs.FileReader      = (*handle)(nil)
	_ gofs.FileWriter      = (*handle)(nil)
	_ gofs.FileFlusher     = (*handle)(nil)
	_ gofs.FileFsyncer     = (*handle)(nil)
	_ gofs.FileReleaser    = (*handle)(nil)
)

const entryTimeout = time.Hour

func (n *node) path() string { return filepath.Join(n.t.dir, n.rel) }

// child returns the node for rel, whose backing file has st.
func (n *node) child(ctx context.Context, rel string, st *syscall.Stat_t, out *fuse.EntryOut) *gofs.Inode {
	out.FromStat(st)
	out.SetEntryTimeout(entryTimeout)
	return n.NewInode(ctx, &node{t: n.t, rel: rel}, gofs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: st.Ino})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	rel := filepath.Join(n.rel, name)
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(n.t.dir, rel), &st); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.child(ctx, rel, &st, out), 0
}

// LookupNode finds the backing file with inode number id: the second
// server gets the node IDs of the first one this way.
func (n *node) LookupNode(ctx context.Context, id uint64, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var found string
	var st syscall.Stat_t
	errFound := errors.New("found")
	err := filepath.WalkDir(n.t.dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if st.Ino == id && p != n.t.dir {
			found = p
			return errFound
		}
		return nil
	})
	if !errors.Is(err, errFound) {
		n.t.report(event{Event: "lookupnode", Ino: id, Errno: int(syscall.ENOENT)})
		return nil, syscall.ENOENT
	}
	rel, err := filepath.Rel(n.t.dir, found)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	n.t.report(event{Event: "lookupnode", Ino: id, Name: rel})
	return n.child(ctx, rel, &st, out), 0
}

func (n *node) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	entries, err := os.ReadDir(n.path())
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	list := make([]fuse.DirEntry, 0, len(entries))
	for _, e := range entries {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(n.path(), e.Name()), &st); err != nil {
			continue
		}
		list = append(list, fuse.DirEntry{Name: e.Name(), Ino: st.Ino, Mode: st.Mode})
	}
	return gofs.NewListDirStream(list), 0
}

func (n *node) Getattr(_ context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	var err error
	if h, ok := f.(*handle); ok {
		err = syscall.Fstat(int(h.f.Fd()), &st)
	} else {
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		if err := os.Truncate(n.path(), int64(size)); err != nil {
			return gofs.ToErrno(err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// open opens the backing file; every handle bypasses the page cache
// (FOPEN_DIRECT_IO), so that reads and writes through descriptors
// opened before a resume reach the new server.
func (n *node) open(flags uint32) (*handle, syscall.Errno) {
	f, err := os.OpenFile(n.path(), int(flags)&(syscall.O_ACCMODE|syscall.O_APPEND), 0)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return &handle{n: n, f: f}, 0
}

func (n *node) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h, errno := n.open(flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// Reopen opens a file again for a handle of the first server. For a
// directory, it leaves the handle to the bridge, which reads it with
// Readdir as if it had been opened now.
func (n *node) Reopen(_ context.Context, flags uint32) (gofs.FileHandle, syscall.Errno) {
	n.t.report(event{Event: "reopen", Ino: n.StableAttr().Ino, Name: n.rel, Flags: flags})
	if n.IsDir() {
		return nil, 0
	}
	h, errno := n.open(flags)
	if errno != 0 {
		return nil, errno
	}
	return h, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	rel := filepath.Join(n.rel, name)
	p := filepath.Join(n.t.dir, rel)
	f, err := os.OpenFile(p, int(flags)&(syscall.O_ACCMODE|syscall.O_APPEND|syscall.O_EXCL)|os.O_CREATE, os.FileMode(mode&0o777))
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, nil, 0, gofs.ToErrno(err)
	}
	ch := n.child(ctx, rel, &st, out)
	return ch, &handle{n: ch.Operations().(*node), f: f}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Unlink(_ context.Context, name string) syscall.Errno {
	return gofs.ToErrno(syscall.Unlink(filepath.Join(n.path(), name)))
}

// handle is an open backing file.
type handle struct {
	n *node
	f *os.File
}

func (h *handle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.n.t.gate != "" && filepath.Base(h.n.rel) == h.n.t.gate {
		h.n.t.report(event{Event: "blocked", Ino: h.n.StableAttr().Ino, Name: h.n.rel})
		select {} // until the process is killed
	}
	n, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, gofs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(_ context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.f.WriteAt(data, off)
	if err != nil {
		return uint32(n), gofs.ToErrno(err)
	}
	return uint32(n), 0
}

func (h *handle) Flush(context.Context) syscall.Errno { return 0 }

func (h *handle) Fsync(context.Context, uint32) syscall.Errno { return gofs.ToErrno(h.f.Sync()) }

func (h *handle) Release(context.Context) syscall.Errno { return gofs.ToErrno(h.f.Close()) }
