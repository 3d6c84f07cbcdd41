package s3fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// This file applies the POSIX metadata of posixmeta.go: what entries
// show, what uploads carry, and chmod, chown and utimens, which change
// the metadata of an object in place with a server-side copy (CopyObject
// with REPLACE, UploadPartCopy above 5 GiB), never a re-upload. The kernel
// checks who may change what (the mount uses default_permissions).

// overrides are the mount's defaults and forced values.
func (f *FS) overrides() attrOverrides {
	o := attrOverrides{defUID: f.opts.UID, defGID: f.opts.GID, fileMode: f.fileMode(), dirMode: f.dirMode()}
	if f.opts.ForceUID {
		o.uid = &f.opts.UID
	}
	if f.opts.ForceGID {
		o.gid = &f.opts.GID
	}
	if f.opts.ForceUmask {
		o.umask = &f.opts.Umask
	}
	return o
}

// stagedEntry is the entry of st's staged data: its size and time, with
// the metadata the object has or gets (st.meta), the staged time as mtime.
func (st *fileState) stagedEntry() (statEntry, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	size, mtime, ok := st.stagedLocked()
	if !ok {
		return statEntry{}, false
	}
	return statEntry{kind: kindFile, size: size, mtime: mtime, meta: stagedMetaLocked(st)}, true
}

// stagedMetaLocked is st.meta with the staged data's mtime, and a ctime no
// older than it (st.mu held).
func stagedMetaLocked(st *fileState) map[string]string {
	a := posixAttrs{hasMtime: true, mtime: st.mtime}
	if old := parsePosix(st.meta); !old.hasCtime || old.ctime.Before(st.mtime) {
		a.hasCtime, a.ctime = true, st.mtime
	}
	return withPosix(st.meta, a)
}

// uploadMetaLocked is the user metadata an upload of st's staged data
// carries (st.mu held; the caller adds the writer mark).
func (f *FS) uploadMetaLocked(st *fileState) map[string]string {
	return stagedMetaLocked(st)
}

// adoptMeta gives st the metadata of the object it stages, if it has none
// yet (an open of an existing file: a rewrite keeps mode and owner).
func (st *fileState) adoptMeta(ent statEntry) {
	st.mu.Lock()
	if st.meta == nil && ent.meta != nil {
		st.meta = ent.meta
	}
	st.mu.Unlock()
}

// newMeta is the metadata of an entry the caller of ctx creates with mode
// (file type bits included).
func newMeta(ctx context.Context, mode uint32) map[string]string {
	now := time.Now()
	a := posixAttrs{mode: mode, hasMode: true, mtime: now, hasMtime: true, ctime: now, hasCtime: true}
	if c, ok := fuse.FromContext(ctx); ok {
		a.uid, a.hasUID, a.gid, a.hasGID = c.Uid, true, c.Gid, true
	}
	return withPosix(nil, a)
}

// attrChanges reads chmod, chown and utimens out of a SETATTR; ok is false
// if it changes none of them.
func attrChanges(in *fuse.SetAttrIn, curMode uint32) (a posixAttrs, ok bool) {
	if m, has := in.GetMode(); has {
		a.mode, a.hasMode, ok = curMode&syscall.S_IFMT|m&0o7777, true, true
	}
	if u, has := in.GetUID(); has {
		a.uid, a.hasUID, ok = u, true, true
	}
	if g, has := in.GetGID(); has {
		a.gid, a.hasGID, ok = g, true, true
	}
	if t, has := in.GetMTime(); has {
		a.mtime, a.hasMtime, ok = t, true, true
	}
	if t, has := in.GetATime(); has {
		a.atime, a.hasAtime, ok = t, true, true
	}
	if ok {
		a.ctime, a.hasCtime = time.Now(), true
	}
	return a, ok
}

// setObjectAttrs applies chmod, chown and utimens of in to the file or
// symlink key, whose current entry is cur: on staged data that is still
// to be uploaded, in the state, which the upload carries; else on the
// object, with a server-side copy.
func (f *FS) setObjectAttrs(ctx context.Context, key string, cur statEntry, in *fuse.SetAttrIn) syscall.Errno {
	var attr fuse.Attr
	f.fillFileAttr(&attr, cur)
	a, ok := attrChanges(in, attr.Mode)
	if !ok {
		return 0
	}
	var mtime *time.Time
	if a.hasMtime {
		mtime = &a.mtime
	}
	// Only what changed is written (and ctime), as s3fs does: metadata
	// other clients set stays as it is.
	return f.changeMeta(ctx, key, cur, func(m map[string]string) map[string]string {
		return withPosix(m, a)
	}, mtime)
}

// changeMeta changes the user metadata of the file or symlink key, whose
// current entry is cur, with change (which returns a new map), and sets
// its mtime if mtime is not nil: on staged data still to be uploaded, in
// the state, which the upload carries; else on the object, with a
// server-side copy.
func (f *FS) changeMeta(ctx context.Context, key string, cur statEntry, change func(map[string]string) map[string]string, mtime *time.Time) syscall.Errno {
	st := f.stateOf(key)
	if st != nil {
		st.uploadMu.Lock()
		defer st.uploadMu.Unlock()
		st.mu.Lock()
		// Only data still to be uploaded carries the change: a file
		// that is open for writing but uploaded (clean) may see no
		// upload again (the writer may only close), so its object
		// changes now, and a later upload carries st.meta.
		_, _, staged := st.stagedLocked()
		if staged && st.dirtyLocked() {
			meta := st.meta
			if meta == nil {
				meta = cur.meta
			}
			st.meta = change(meta)
			if mtime != nil {
				st.mtime = *mtime
			}
			st.mu.Unlock()
			f.log.V(1).Info("metadata change staged", "key", key)
			return 0
		}
		st.mu.Unlock()
	}
	if cur.meta == nil {
		ent, err := f.headFile(ctx, key)
		if err != nil {
			f.log.Error(err, "setattr", "key", key)
			return Errno(err)
		}
		cur = ent
	}
	meta := change(cur.meta)
	ctype := cur.ctype
	if ctype == "" {
		ctype = contentType(key)
	}
	if err := f.copyObjectSized(ctx, key, key, cur.size, meta, ctype); err != nil {
		f.log.Error(err, "setattr", "key", key)
		return Errno(err)
	}
	if st != nil {
		st.mu.Lock()
		st.meta = meta
		if _, _, staged := st.stagedLocked(); staged && mtime != nil {
			st.mtime = *mtime
		}
		st.mu.Unlock()
	}
	cur.meta, cur.ctype = meta, ctype
	f.cache.put(key, cur)
	f.log.V(1).Info("metadata changed", "key", key)
	return 0
}

// prefetchConcurrency is how many lookups prefetchMeta sends at once.
const prefetchConcurrency = 32

// prefetchMeta looks up the entries of the directory dk whose metadata
// no cache holds, several at a time, filling the stat cache. Failures are
// left to the lookups that follow.
func (f *FS) prefetchMeta(ctx context.Context, dk string, ents map[string]statEntry) {
	var keys []string
	for name, ent := range ents {
		if ent.meta != nil {
			continue
		}
		if c, ok := f.cache.get(dk + name); ok && (c.meta != nil || c.kind == kindMissing) {
			continue
		}
		keys = append(keys, dk+name)
	}
	_ = parallelN(ctx, prefetchConcurrency, keys, func(ctx context.Context, key string) error {
		_, _ = f.stat(ctx, key)
		return nil
	})
}

// copyKeepingMeta copies src (size bytes) to dst with src's user metadata
// (with a new ctime if renamed: the object itself is renamed, not a
// directory above it) and the Content-Type dst's name implies.
func (f *FS) copyKeepingMeta(ctx context.Context, src, dst string, size int64, renamed bool) error {
	meta := map[string]string(nil)
	if ent, ok := f.cache.get(src); ok && ent.kind == kindFile && ent.meta != nil {
		meta = ent.meta
	} else {
		ent, err := f.headFile(ctx, src)
		if err != nil {
			return err
		}
		meta, size = ent.meta, ent.size
	}
	if renamed { // a rename changes the status change time, as in s3fs
		meta = withPosix(meta, posixAttrs{ctime: time.Now(), hasCtime: true})
	}
	return f.copyObjectSized(ctx, src, dst, size, meta, contentType(dst))
}

// putSmall stores body as key with meta (symlinks, device nodes, FIFOs).
func (f *FS) putSmall(ctx context.Context, key string, body []byte, meta map[string]string) error {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opPut)
	_, err := f.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &f.opts.Bucket, Key: &key, Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
		ContentType: aws.String(contentType(key)), Metadata: meta,
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// makeSpecial creates key as an object of the given mode (a symlink with
// its target as body, as s3fs stores one, or an empty FIFO, socket or
// device node) and returns its inode.
func (d *dirNode) makeSpecial(ctx context.Context, name string, mode uint32, body []byte, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := d.fsys
	if f.opts.ReadOnly {
		return nil, syscall.EROFS
	}
	key, errno := d.childKey(name)
	if errno != 0 {
		return nil, errno
	}
	meta := newMeta(ctx, mode)
	if err := f.putSmall(ctx, key, body, meta); err != nil {
		f.log.Error(err, "create special", "key", key)
		return nil, Errno(err)
	}
	if old := f.stateOf(key); old != nil {
		f.markDeleted(old)
	}
	ent := statEntry{kind: kindFile, size: int64(len(body)), mtime: time.Now(), meta: meta, ctype: contentType(key)}
	f.cache.put(key, ent)
	f.listings.set(key, ent)
	f.nodes.noteDir(parentKey(key))
	return f.newChild(ctx, &d.Inode, key, ent, out, true), 0
}

// symlinkNode is a symbolic link: an object whose mode says S_IFLNK and
// whose body is the target.
type symlinkNode struct {
	node

	mu     sync.Mutex
	last   statEntry
	target []byte
}

var (
	_ fs.NodeReadlinker = (*symlinkNode)(nil)
	_ fs.NodeGetattrer  = (*symlinkNode)(nil)
	_ fs.NodeSetattrer  = (*symlinkNode)(nil)
)

func (f *FS) newSymlinkNode() fs.InodeEmbedder { return &symlinkNode{node: node{fsys: f}} }

func (n *symlinkNode) remember(ent statEntry) {
	n.mu.Lock()
	n.last = ent
	n.mu.Unlock()
}

func (n *symlinkNode) key() (string, bool) {
	p, ok := n.relPath()
	return n.fsys.opts.Prefix + p, ok
}

// Readlink reads the target: the object's body (cached in the node).
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.mu.Lock()
	if n.target != nil {
		t := n.target
		n.mu.Unlock()
		return t, 0
	}
	n.mu.Unlock()
	key, ok := n.key()
	if !ok {
		return nil, syscall.ENOENT
	}
	rctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	n.fsys.count(opGet)
	out, err := n.fsys.api.GetObject(rctx, &s3.GetObjectInput{Bucket: &n.fsys.opts.Bucket, Key: &key})
	if err != nil {
		return nil, Errno(fmt.Errorf("readlink %s: %w", key, err))
	}
	defer out.Body.Close()
	t, err := io.ReadAll(io.LimitReader(out.Body, 4096))
	if err != nil {
		return nil, Errno(fmt.Errorf("readlink %s: %w", key, err))
	}
	n.mu.Lock()
	n.target = t
	n.mu.Unlock()
	return t, 0
}

// Getattr reports the link's attributes.
func (n *symlinkNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	key, ok := n.key()
	if !ok {
		n.mu.Lock()
		ent := n.last
		n.mu.Unlock()
		n.fsys.fillFileAttr(&out.Attr, ent)
		return 0
	}
	ent, errno := n.fsys.stat(ctx, key)
	if errno != 0 {
		return errno
	}
	n.remember(ent)
	n.fsys.fillFileAttr(&out.Attr, ent)
	return 0
}

// Setattr changes the owner and times of the link (lchown, lutimes).
func (n *symlinkNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	key, ok := n.key()
	if !ok {
		return syscall.ENOENT
	}
	ent, errno := f.stat(ctx, key)
	if errno != 0 {
		return errno
	}
	if errno := f.setObjectAttrs(ctx, key, ent, in); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, fh, out)
}
