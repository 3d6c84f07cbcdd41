package s3fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is an object (or a file staged locally that is not uploaded
// yet). Its data lives in the bucket and, while written, in a fileState.
type fileNode struct {
	node

	mu   sync.Mutex
	last statEntry // last known attributes, for an unlinked open file
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
)

// key is the object key of the file; ok is false once it was unlinked.
func (n *fileNode) key() (string, bool) {
	p, ok := n.relPath()
	if !ok {
		return "", false
	}
	return n.fsys.opts.Prefix + p, true
}

func (n *fileNode) remember(ent statEntry) {
	n.mu.Lock()
	n.last = ent
	n.mu.Unlock()
}

func (n *fileNode) remembered() statEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// Getattr reports the staged size while the file is staged, else the
// object's size and LastModified (stat cache or HeadObject).
func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	var st *fileState
	if h, ok := fh.(*handle); ok {
		st = h.st
	}
	key, hasKey := n.key()
	if st == nil && hasKey {
		st = f.stateOf(key)
	}
	if st != nil {
		if ent, ok := st.stagedEntry(); ok {
			n.remember(ent)
			f.fillFileAttr(&out.Attr, ent)
			return 0
		}
	}
	if !hasKey {
		// Unlinked while open: the last attributes, and no links.
		f.fillFileAttr(&out.Attr, n.remembered())
		out.Nlink = 0
		return 0
	}
	ent, errno := f.stat(ctx, key)
	if errno != 0 {
		return errno
	}
	if ent.kind != kindFile {
		return syscall.ENOENT // replaced by a directory behind our back
	}
	n.remember(ent)
	f.fillFileAttr(&out.Attr, ent)
	return 0
}

// Setattr truncates (size) and changes mode, owner and times (attrs.go). A
// truncate without a handle is uploaded at once, unless the file
// is open for writing: then the writer's flush uploads it. That is also
// how open(O_TRUNC) arrives (go-fuse does not negotiate atomic O_TRUNC, so
// the kernel sends OPEN, then a SETATTR without the new handle), and an
// immediate upload would PUT an empty object before every overwrite.
func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	if size, ok := in.GetSize(); ok {
		var st *fileState
		if h, ok := fh.(*handle); ok {
			st = h.st
		} else {
			key, ok := n.key()
			if !ok {
				return syscall.ENOENT
			}
			st = f.acquireState(key)
			defer f.releaseState(st)
		}
		err := f.withRoom(ctx, func() error { return f.truncate(ctx, st, int64(size)) })
		st.mu.Lock()
		writers := st.writers
		st.mu.Unlock()
		if err == nil && fh == nil && writers == 0 {
			err = f.sync(ctx, st)
		}
		if err != nil {
			f.log.Error(err, "truncate", "size", size)
			return Errno(err)
		}
		f.log.V(1).Info("truncate", "size", size)
	}
	if key, ok := n.key(); ok {
		ent, errno := f.stat(ctx, key)
		if errno != 0 {
			return errno
		}
		if errno := f.setObjectAttrs(ctx, key, ent, in); errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, fh, out)
}

// Open returns a handle. O_TRUNC stages an empty file; other writers stage
// the object on their first write.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fsys
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if writable && f.opts.ReadOnly {
		return nil, 0, syscall.EROFS
	}
	key, ok := n.key()
	if !ok {
		return nil, 0, syscall.ENOENT
	}
	st := f.acquireState(key)
	st.adoptMeta(n.remembered())
	if writable && flags&syscall.O_TRUNC != 0 {
		if err := f.truncate(ctx, st, 0); err != nil {
			f.releaseState(st)
			f.log.Error(err, "open", "key", key)
			return nil, 0, Errno(err)
		}
	}
	f.log.V(1).Info("open", "key", key, "flags", flags)
	sizeHint := int64(-1)
	if ent := n.remembered(); ent.kind == kindFile {
		sizeHint = ent.size
	}
	return newHandle(f, st, flags, sizeHint), 0, 0
}
