package s3fs

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is what directories and files share: the go-fuse inode and the FS.
type node struct {
	fs.Inode
	fsys *FS
}

var (
	_ fs.NodeStatfser    = (*node)(nil)
	_ fs.NodeOnForgetter = (*node)(nil)
)

// relPath is the path of the node below the mount root ("" for the root).
// ok is false for a node that was unlinked (it has no path any more).
func (n *node) relPath() (p string, ok bool) {
	var segs []string
	for in := &n.Inode; !in.IsRoot(); {
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		segs = append(segs, name)
		in = parent
	}
	for i, j := 0, len(segs)-1; i < j; i, j = i+1, j-1 {
		segs[i], segs[j] = segs[j], segs[i]
	}
	return strings.Join(segs, "/"), true
}

// Statfs reports large fixed numbers: a bucket has no meaningful capacity.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	const blocks = 1 << 40 // 4 PiB of 4 KiB blocks
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = blocks
	out.Bfree = blocks
	out.Bavail = blocks
	out.Files = 1 << 32
	out.Ffree = 1 << 32
	out.NameLen = 255
	return 0
}

// OnForget releases the number of a node the kernel forgot.
func (n *node) OnForget() {
	if !n.IsRoot() {
		n.fsys.nodes.forget(&n.Inode)
	}
}

// maxNameLen is the longest name of a directory entry (NAME_MAX).
const maxNameLen = 255

// validName reports whether an S3 path segment can be a directory entry.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= maxNameLen && !strings.Contains(name, "/")
}

// fillFileAttr fills the attributes of a file (or symlink, FIFO, socket or
// device node: an object whose mode says so) from its entry: size and
// LastModified, and the POSIX metadata the object keeps (posixmeta.go).
func (f *FS) fillFileAttr(out *fuse.Attr, ent statEntry) {
	f.fillAttr(out, ent, fuse.S_IFREG)
	out.Size = uint64(max(ent.size, 0))
	out.Blocks = (out.Size + 511) / 512
}

// fillAttr fills mode, owner, times, link count and block size of an entry
// of type typ (S_IFREG or S_IFDIR).
func (f *FS) fillAttr(out *fuse.Attr, ent statEntry, typ uint32) {
	lastMod := ent.mtime
	if lastMod.IsZero() {
		lastMod = f.started
	}
	mode, uid, gid, mtime, ctime, atime := f.overrides().effective(parsePosix(ent.meta), typ, lastMod)
	out.Mode = mode
	out.Blksize = 4096
	out.Nlink = 1 // for a directory: "unknown number of subdirectories" for find(1)
	out.Owner = fuse.Owner{Uid: uid, Gid: gid}
	out.SetTimes(&atime, &mtime, &ctime)
}

// fillDirAttr fills the attributes of a directory. Directories have no
// time in S3; they show the mount time.
func (f *FS) fillDirAttr(out *fuse.Attr, root bool) {
	perm := f.dirMode()
	if root {
		perm = 0o777 &^ f.opts.MountUmask
	}
	out.Mode = fuse.S_IFDIR | perm
	out.Size = 4096
	out.Blocks = 8
	out.Blksize = 4096
	out.Nlink = 1 // "unknown number of subdirectories" for find(1)
	out.Owner = fuse.Owner{Uid: f.opts.UID, Gid: f.opts.GID}
	t := f.started
	out.SetTimes(&t, &t, &t)
}

// newChild returns the inode for key (without trailing slash) below parent
// and fills out. fresh is for a created file: a new node, not the one
// the kernel may hold for an older object of the same name.
func (f *FS) newChild(ctx context.Context, parent *fs.Inode, key string, ent statEntry, out *fuse.EntryOut, fresh bool) *fs.Inode {
	if ent.kind == kindDir {
		ch := f.nodes.inode(ctx, parent, key+"/", fuse.S_IFDIR, false, f.newDirNode)
		f.fillDirEntAttr(&out.Attr, ent)
		return ch
	}
	f.fillFileAttr(&out.Attr, ent)
	typ, mk := out.Mode&syscall.S_IFMT, f.newFileNode
	if typ == syscall.S_IFLNK {
		mk = f.newSymlinkNode
	}
	ch := f.nodes.inode(ctx, parent, key, typ, fresh, mk)
	switch n := ch.Operations().(type) {
	case *fileNode:
		n.remember(ent)
	case *symlinkNode:
		n.remember(ent)
	}
	return ch
}

func (f *FS) newDirNode() fs.InodeEmbedder  { return &dirNode{node: node{fsys: f}} }
func (f *FS) newFileNode() fs.InodeEmbedder { return &fileNode{node: node{fsys: f}} }
