package s3fs

import (
	"context"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirNode is a directory: the mount root, a marker "name/", or a prefix
// with objects under it.
type dirNode struct {
	node
}

var (
	_ fs.NodeLookuper  = (*dirNode)(nil)
	_ fs.NodeGetattrer = (*dirNode)(nil)
	_ fs.NodeSetattrer = (*dirNode)(nil)
	_ fs.NodeReaddirer = (*dirNode)(nil)
	_ fs.NodeCreater   = (*dirNode)(nil)
	_ fs.NodeMkdirer   = (*dirNode)(nil)
	_ fs.NodeRmdirer   = (*dirNode)(nil)
	_ fs.NodeUnlinker  = (*dirNode)(nil)
	_ fs.NodeRenamer   = (*dirNode)(nil)
	_ fs.NodeLinker    = (*dirNode)(nil)
	_ fs.NodeSymlinker = (*dirNode)(nil)
	_ fs.NodeMknoder   = (*dirNode)(nil)
	_ fs.NodeFsyncer   = (*dirNode)(nil)
)

// dirKey is the key prefix of the directory: Options.Prefix for the root,
// else ending in "/". ok is false if the directory was removed.
func (d *dirNode) dirKey() (string, bool) {
	p, ok := d.relPath()
	if !ok {
		return "", false
	}
	if p == "" {
		return d.fsys.opts.Prefix, true
	}
	return d.fsys.opts.Prefix + p + "/", true
}

// childKey is the key of the entry name in d.
func (d *dirNode) childKey(name string) (string, syscall.Errno) {
	dk, ok := d.dirKey()
	if !ok {
		return "", syscall.ENOENT
	}
	key := dk + name
	// Lookup shows no name over 255 bytes (NAME_MAX); none is made.
	if len(key)+1 > maxKeyLen || len(name) > maxNameLen {
		return "", syscall.ENAMETOOLONG
	}
	return key, 0
}

// Lookup finds name: a staged file, an object, or a directory.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !validName(name) {
		return nil, syscall.ENOENT
	}
	key, errno := d.childKey(name)
	if errno != 0 {
		return nil, errno
	}
	ent, errno := d.fsys.stat(ctx, key)
	d.fsys.log.V(1).Info("lookup", "key", key, "errno", errno)
	if errno != 0 {
		return nil, errno
	}
	d.fsys.nodes.noteDir(parentKey(key))
	return d.fsys.newChild(ctx, &d.Inode, key, ent, out, false), 0
}

// parentKey is the directory key (ending in "/", or the mount prefix) of
// the node key key ("dir/" for a directory).
func parentKey(key string) string {
	dk, _ := splitKey(strings.TrimSuffix(key, "/"))
	return dk
}

// Getattr reports the directory's attributes: the mount's for the root,
// the marker's metadata for others (dirattrs.go).
func (d *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := d.fsys
	dk, ok := d.dirKey()
	if d.IsRoot() || !ok {
		f.fillDirAttr(&out.Attr, d.IsRoot())
		return 0
	}
	ent, errno := f.stat(ctx, strings.TrimSuffix(dk, "/"))
	if errno != 0 || ent.kind != kindDir {
		f.fillDirAttr(&out.Attr, false) // removed or replaced meanwhile
		return 0
	}
	f.fillDirEntAttr(&out.Attr, ent)
	return 0
}

// Setattr changes the mode, owner and times of a directory (its marker's
// metadata); on the mount root it accepts and ignores them.
func (d *dirNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := d.fsys
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	dk, ok := d.dirKey()
	if !d.IsRoot() && ok {
		key := strings.TrimSuffix(dk, "/")
		ent, errno := f.stat(ctx, key)
		if errno != 0 {
			return errno
		}
		if errno := f.setDirAttrs(ctx, key, ent, in); errno != 0 {
			return errno
		}
	}
	return d.Getattr(ctx, fh, out)
}

// Readdir lists the directory with ListObjectsV2 and Delimiter "/", over
// all pages, plus files staged locally that are not in the bucket yet. The
// listing fills the stat cache so that stat of each entry needs no request.
func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	f := d.fsys
	dk, ok := d.dirKey()
	if !ok {
		return nil, syscall.ENOENT
	}
	ents, cached := f.listings.snapshot(dk)
	if !cached {
		var err error
		if ents, err = f.listDir(ctx, dk); err != nil {
			f.log.Error(err, "readdir", "key", dk)
			return nil, Errno(err)
		}
	}
	for name, ent := range f.stagedUnder(dk) {
		ents[name] = ent
	}
	if !f.opts.ReaddirPlusAuto {
		// READDIRPLUS looks up every entry, one after another: fetch the
		// metadata the listing lacks in parallel first.
		f.prefetchMeta(ctx, dk, ents)
	}
	names := make([]string, 0, len(ents))
	for name := range ents {
		names = append(names, name)
	}
	sort.Strings(names)
	list := make([]fuse.DirEntry, len(names))
	keys := make([]string, len(names))
	for i, name := range names {
		list[i] = fuse.DirEntry{Name: name, Mode: fuse.S_IFREG}
		keys[i] = dk + name
		if ents[name].kind == kindDir {
			list[i].Mode = fuse.S_IFDIR
			keys[i] += "/"
		}
	}
	for i, ino := range f.nodes.peek(keys) {
		list[i].Ino = ino
	}
	f.nodes.noteDir(dk) // READDIRPLUS hands out the entries
	f.log.V(1).Info("readdir", "key", dk, "entries", len(list))
	return fs.NewListDirStream(list), 0
}

// listDir lists the directory dk from the bucket (all pages), fills the
// stat cache and the listing cache, and returns the entries by name.
func (f *FS) listDir(ctx context.Context, dk string) (map[string]statEntry, error) {
	ents := make(map[string]statEntry)
	gen := f.listings.generation()
	err := f.list(ctx, dk, "/", func(out *s3.ListObjectsV2Output) error {
		_, _ = parsePage(dk, out, ents)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for name, ent := range ents {
		f.cache.putListed(dk+name, ent)
	}
	f.listings.put(dk, ents, gen)
	return ents, nil
}

// stagedUnder returns the staged files directly in the directory dk.
func (f *FS) stagedUnder(dk string) map[string]statEntry {
	out := make(map[string]statEntry)
	for _, c := range f.statesUnder(dk, true) {
		if size, mtime, ok := c.st.stagedLive(); ok {
			out[c.name] = statEntry{kind: kindFile, size: size, mtime: mtime}
		}
	}
	return out
}

// hasStagedUnder reports whether a staged file exists anywhere below dk.
func (f *FS) hasStagedUnder(dk string) bool {
	for _, c := range f.statesUnder(dk, false) {
		if _, _, ok := c.st.stagedLive(); ok {
			return true
		}
	}
	return false
}

// stateUnder is a state found by statesUnder, with its name below the
// directory.
type stateUnder struct {
	name string
	st   *fileState
}

// statesUnder returns the states of keys below dk (only those directly in
// it if direct), except write-cache copies, which are in the bucket and
// its listing already. It holds FS.mu only to walk FS.files: the caller
// takes each state's mu afterwards, since an upload finishing may hold one
// over network requests and FS.mu must never wait for that.
func (f *FS) statesUnder(dk string, direct bool) []stateUnder {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []stateUnder
	for key, st := range f.files {
		name, ok := strings.CutPrefix(key, dk)
		if !ok || st.kept != nil || (direct && !validName(name)) {
			continue
		}
		out = append(out, stateUnder{name: name, st: st})
	}
	return out
}

// Create makes a new empty file, staged locally; close uploads it.
func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := d.fsys
	if f.opts.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	key, errno := d.childKey(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	st, err := f.createState(key)
	if err != nil {
		f.log.Error(err, "create", "key", key)
		return nil, nil, 0, Errno(err)
	}
	meta := newMeta(ctx, syscall.S_IFREG|mode&0o7777)
	st.mu.Lock()
	st.meta = meta
	st.mu.Unlock()
	ent := statEntry{kind: kindFile, mtime: time.Now(), meta: meta}
	f.cache.put(key, ent)
	f.listings.set(key, ent)
	f.log.V(1).Info("create", "key", key)
	f.nodes.noteDir(parentKey(key))
	ch := f.newChild(ctx, &d.Inode, key, ent, out, true)
	return ch, newHandle(f, st, flags, -1), 0, 0
}

// Mkdir puts the marker "name/" with an empty body.
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := d.fsys
	if f.opts.ReadOnly {
		return nil, syscall.EROFS
	}
	key, errno := d.childKey(name)
	if errno != 0 {
		return nil, errno
	}
	meta := newMeta(ctx, syscall.S_IFDIR|mode&0o7777)
	if err := f.putMarker(ctx, key+"/", meta); err != nil {
		f.log.Error(err, "mkdir", "key", key)
		return nil, Errno(err)
	}
	ent := statEntry{kind: kindDir, mtime: time.Now(), meta: meta, ctype: dirContentType, dirObj: key + "/"}
	f.cache.put(key, ent)
	f.listings.set(key, ent)
	// No empty listing is cached for the new directory: objects other
	// clients put under it must show. The first lookup that misses in it
	// lists it.
	f.made.add(key + "/")
	f.log.V(1).Info("mkdir", "key", key)
	f.nodes.noteDir(parentKey(key))
	return f.newChild(ctx, &d.Inode, key, ent, out, false), 0
}

// Rmdir deletes the marker of an empty directory; ENOTEMPTY if anything
// else is under its prefix (in the bucket or staged locally).
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	f := d.fsys
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	key, errno := d.childKey(name)
	if errno != 0 {
		return errno
	}
	marker := key + "/"
	ent, errno := f.stat(ctx, key)
	if errno != 0 {
		return errno
	}
	if ent.kind != kindDir {
		return syscall.ENOTDIR
	}
	empty, err := f.onlyMarker(ctx, marker)
	if err != nil {
		f.log.Error(err, "rmdir", "key", marker)
		return Errno(err)
	}
	if !empty || f.hasStagedUnder(marker) {
		return syscall.ENOTEMPTY
	}
	if err := f.deleteObject(ctx, marker); err != nil {
		f.log.Error(err, "rmdir", "key", marker)
		return Errno(err)
	}
	if ent.dirObj == key { // an old-style directory object
		if err := f.deleteObject(ctx, key); err != nil {
			f.log.Error(err, "rmdir", "key", key)
			return Errno(err)
		}
	}
	f.cache.removePrefix(marker)
	f.cache.put(key, statEntry{kind: kindMissing})
	f.listings.forgetPrefix(marker)
	f.listings.remove(key)
	f.nodes.detach(marker)
	f.log.V(1).Info("rmdir", "key", marker)
	return 0
}

// onlyMarker reports whether nothing but the marker itself is under marker.
func (f *FS) onlyMarker(ctx context.Context, marker string) (bool, error) {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opList)
	out, err := f.api.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &f.opts.Bucket, Prefix: &marker, MaxKeys: aws.Int32(2)})
	if err != nil {
		return false, err
	}
	for _, o := range out.Contents {
		if aws.ToString(o.Key) != marker {
			return false, nil
		}
	}
	return len(out.CommonPrefixes) == 0, nil
}

// Unlink deletes the object and drops its staged data, if any.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	f := d.fsys
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	key, errno := d.childKey(name)
	if errno != 0 {
		return errno
	}
	st := f.stateOf(key)
	if st != nil {
		st.uploadMu.Lock() // no upload of this file runs or starts meanwhile
		defer st.uploadMu.Unlock()
		// POSIX: an open file stays readable after unlink. Reads of an
		// unstaged file go to the bucket, so stage it before deleting it
		// (up to MultipartThreshold; larger ones read ENOENT afterwards).
		if err := f.withRoom(ctx, func() error { return f.stageOpenForUnlink(ctx, st) }); err != nil {
			f.log.Error(err, "unlink: stage open file", "key", key)
			return Errno(err)
		}
	}
	if err := f.deleteObject(ctx, key); err != nil {
		f.log.Error(err, "unlink", "key", key)
		return Errno(err)
	}
	if st != nil {
		f.markDeleted(st)
	}
	f.cache.put(key, statEntry{kind: kindMissing})
	f.listings.remove(key)
	f.nodes.detach(key)
	f.log.V(1).Info("unlink", "key", key)
	return 0
}

// stageOpenForUnlink stages the content of st if a handle has it open, it
// is not staged yet and it is not larger than MultipartThreshold.
func (f *FS) stageOpenForUnlink(ctx context.Context, st *fileState) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.opens.Load() == 0 || st.file != nil || st.deleted {
		return nil
	}
	ent, ok := f.cache.get(st.key)
	if ok && ent.kind == kindFile && ent.size > f.opts.MultipartThreshold {
		return nil
	}
	return f.loadLocked(ctx, st)
}

// Link is not supported: S3 has no hard links.
func (d *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.fsys.opts.ReadOnly {
		return nil, syscall.EROFS
	}
	return nil, syscall.ENOTSUP
}

// Symlink stores the link as s3fs does: an object whose body is the
// target and whose mode says S_IFLNK.
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(target) > 4095 {
		return nil, syscall.ENAMETOOLONG
	}
	return d.makeSpecial(ctx, name, syscall.S_IFLNK|0o777, []byte(target), out)
}

// Mknod makes an empty object whose mode is the node's: a FIFO, socket or
// device node (the kernel serves those itself) or a regular file.
func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFREG:
	case 0:
		mode |= syscall.S_IFREG
	default:
		return nil, syscall.EINVAL
	}
	return d.makeSpecial(ctx, name, mode, nil, out)
}

// Fsync of a directory succeeds: directory changes reach the bucket when
// they are made.
func (d *dirNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	return 0
}
