package s3fs

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// A process that takes over the kernel connection of a dead one is asked
// about node numbers it never handed out. LookupNode resolves them: an
// exception or a rename in the node table names its key; any other
// number is the hash number of a key in one of the directories whose
// entries were handed out (the table names those too), found by listing
// them once (resumeIndex).

var _ fs.NodeLookupNoder = (*dirNode)(nil)

// resumeIndexTTL is how long a resume index answers before a number it
// does not know makes it list the directories again.
const resumeIndexTTL = 30 * time.Second

// resumeIndex maps the hash numbers of the keys in the directories the
// node table names to those keys. It is built when the first number that
// nothing else resolves comes in, typically right after a resume.
type resumeIndex struct {
	mu    sync.Mutex // held while building: one build at a time
	built time.Time
	keys  map[uint64]string // "" marks a number two keys hash to
}

// LookupNode resolves a node number the kernel holds and this process did
// not hand out (go-fuse asks the root): the inode, placed in the tree
// under its key with its ancestors, and its attributes. ESTALE if the
// number names no existing object any more.
func (d *dirNode) LookupNode(ctx context.Context, ino uint64, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := d.fsys
	if ino == fuse.FUSE_ROOT_ID {
		f.fillDirAttr(&out.Attr, true)
		return &f.root.Inode, 0
	}
	key, errno := f.resolveNode(ctx, ino)
	if errno == 0 {
		var in *fs.Inode
		if in, errno = f.materialize(ctx, key, ino, out); errno == 0 {
			f.log.V(1).Info("lookup node", "ino", ino, "key", key)
			return in, 0
		}
	}
	f.log.V(1).Info("lookup node failed", "ino", ino, "key", key, "errno", errno)
	return nil, errno
}

// resolveNode returns the node key of number ino.
func (f *FS) resolveNode(ctx context.Context, ino uint64) (string, syscall.Errno) {
	key, from, known := f.nodes.resolved(ino)
	if key != "" && from != "" {
		// A rename the earlier process began and did not confirm: the
		// node is where an object is.
		_, errno := f.stat(ctx, strings.TrimSuffix(key, "/"))
		keep := errno == 0
		if !keep {
			_, errno = f.stat(ctx, strings.TrimSuffix(from, "/"))
			keep = errno != 0
		}
		f.nodes.settle(ino, keep)
		key, _, _ = f.nodes.resolved(ino)
	}
	if key != "" {
		return key, 0
	}
	if known {
		return "", syscall.ESTALE // held: unlinked, or overwritten
	}
	return f.indexKey(ctx, ino)
}

// indexKey finds ino among the hash numbers of the keys in the directories
// the node table names, listing them if the index is missing, or stale
// and without ino.
func (f *FS) indexKey(ctx context.Context, ino uint64) (string, syscall.Errno) {
	x := &f.index
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.keys != nil {
		if key, ok := x.keys[ino]; ok {
			if key == "" {
				return "", syscall.ESTALE // two keys: cannot tell
			}
			return key, 0
		}
		if time.Since(x.built) < resumeIndexTTL {
			return "", syscall.ESTALE
		}
	}
	start := time.Now()
	keys, err := f.buildIndex(ctx)
	if err != nil {
		f.log.Error(err, "resume index")
		return "", Errno(err)
	}
	x.keys, x.built = keys, time.Now()
	f.log.Info("resume index built", "numbers", len(keys), "took", time.Since(start).String())
	if key := keys[ino]; key != "" {
		return key, 0
	}
	return "", syscall.ESTALE
}

// buildIndex lists every directory the node table names (the listing
// cache answers for those it holds) and maps the hash number of each
// entry, and of each directory itself, to its key; keys whose number is
// an exception are left out, and a number two keys share maps to "".
func (f *FS) buildIndex(ctx context.Context) (map[uint64]string, error) {
	dirs, exceptions := f.nodes.snapshot()
	keys := make(map[uint64]string)
	var mu sync.Mutex
	add := func(key string) {
		if exceptions[key] {
			return
		}
		ino := f.nodes.hash.candidate(key, 0)
		if old, ok := keys[ino]; ok && old != key {
			key = ""
		}
		keys[ino] = key
	}
	err := parallel(ctx, dirs, func(ctx context.Context, dk string) error {
		// Staged files first, then the listing: a file whose upload
		// completes in between (a recovered stream completed in the
		// background drops its staging) is in the listing then. In the
		// other order it was in neither, and its number was ESTALE for
		// the index's lifetime (seen in TestResumeUnderLoad: a write to
		// a file open across the kill failed).
		staged := f.stagedUnder(dk)
		ents, cached := f.listings.snapshot(dk)
		if !cached {
			var err error
			if ents, err = f.listDir(ctx, dk); err != nil {
				return err
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if dk != f.opts.Prefix {
			add(dk)
		}
		for name, ent := range ents {
			if ent.kind == kindDir {
				add(dk + name + "/")
			} else {
				add(dk + name)
			}
		}
		for name := range staged {
			add(dk + name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// materialize returns the inode of number ino for key, which the kernel
// holds already: the object is looked up afresh, and the inode placed in
// the tree below its ancestors (so that its path, and so its key, is
// known) and filled into out.
func (f *FS) materialize(ctx context.Context, key string, ino uint64, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	objKey := strings.TrimSuffix(key, "/")
	isDir := objKey != key
	ent, errno := f.stat(ctx, objKey)
	switch {
	case errno == syscall.ENOENT || (errno == 0 && (ent.kind == kindDir) != isDir):
		return nil, syscall.ESTALE // gone, or replaced behind the mount's back
	case errno != 0:
		return nil, errno
	}
	dk := parentKey(key)
	parent, errno := f.dirInode(ctx, dk)
	if errno != 0 {
		return nil, errno
	}
	f.nodes.noteDir(dk)
	mode, mk := uint32(fuse.S_IFREG), f.newFileNode
	if isDir {
		mode, mk = fuse.S_IFDIR, f.newDirNode
	}
	in, ok := f.nodes.inodeAt(ctx, parent, key, ino, mode, mk)
	if !ok {
		return nil, syscall.ESTALE
	}
	if _, p := in.Parent(); p == nil {
		_, name := splitKey(objKey)
		parent.AddChild(name, in, true)
	}
	if isDir {
		f.fillDirEntAttr(&out.Attr, ent)
		return in, 0
	}
	if fn, ok := in.Operations().(*fileNode); ok {
		fn.remember(ent)
	}
	f.fillFileAttr(&out.Attr, ent)
	return in, 0
}

// dirInode returns the inode of the directory dk (ending in "/", or the
// mount prefix for the root), making it and its ancestors if go-fuse's
// tree lacks them. The kernel need not hold them: they give the nodes
// below them their paths.
func (f *FS) dirInode(ctx context.Context, dk string) (*fs.Inode, syscall.Errno) {
	if dk == f.opts.Prefix {
		return &f.root.Inode, 0
	}
	if len(dk) <= len(f.opts.Prefix) || !strings.HasPrefix(dk, f.opts.Prefix) || !strings.HasSuffix(dk, "/") {
		return nil, syscall.ESTALE // not below the mount: a table of another mount?
	}
	parent, errno := f.dirInode(ctx, parentKey(dk))
	if errno != 0 {
		return nil, errno
	}
	_, name := splitKey(strings.TrimSuffix(dk, "/"))
	if ch := parent.GetChild(name); ch != nil && ch.IsDir() {
		return ch, 0
	}
	in := f.nodes.inode(ctx, parent, dk, fuse.S_IFDIR, false, f.newDirNode)
	if _, p := in.Parent(); p == nil {
		parent.AddChild(name, in, true)
	}
	return in, 0
}
