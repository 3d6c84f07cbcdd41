package s3fs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hanwen/go-fuse/v2/fs"
)

// Flags of renameat2(2).
const (
	renameNoReplace = 1
	renameExchange  = 2
)

// renameConcurrency is how many objects a directory rename copies or
// deletes at once.
const renameConcurrency = 8

// Rename moves a file (CopyObject + DeleteObject, or an upload of its staged
// data to the new name) or a directory (every key under it, one by one; not
// atomic). RENAME_EXCHANGE is not supported (EINVAL).
func (d *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := d.fsys
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	if flags&^renameNoReplace != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	src, errno := d.childKey(name)
	if errno != 0 {
		return errno
	}
	dst, errno := np.childKey(newName)
	if errno != 0 {
		return errno
	}
	if src == dst {
		return 0
	}
	ent, errno := f.stat(ctx, src)
	if errno == syscall.ENOENT && resent(ctx) {
		var isDir *bool
		if ch := d.GetChild(name); ch != nil {
			isDir = new(ch.IsDir())
		}
		if f.replayedRename(ctx, src, dst, isDir) {
			return 0
		}
	}
	if errno != 0 {
		return errno
	}
	dent, derrno := f.stat(ctx, dst)
	if derrno != 0 && derrno != syscall.ENOENT {
		return derrno
	}
	dstExists := derrno == 0
	if dstExists && flags&renameNoReplace != 0 {
		return syscall.EEXIST
	}

	var err error
	if ent.kind == kindDir {
		if strings.HasPrefix(dst+"/", src+"/") {
			return syscall.EINVAL // into itself
		}
		if dstExists {
			if dent.kind != kindDir {
				return syscall.ENOTDIR
			}
			empty, err := f.onlyMarker(ctx, dst+"/")
			if err != nil {
				return Errno(err)
			}
			if !empty && resent(ctx) {
				// The earlier server may have begun this rename.
				if empty, err = f.partialDirRename(ctx, src+"/", dst+"/"); err != nil {
					return Errno(err)
				}
			}
			if !empty || f.hasStagedUnder(dst+"/") {
				return syscall.ENOTEMPTY
			}
		}
		mv := f.nodes.beginMove(src+"/", dst+"/", dstExists)
		if err = f.renameDir(ctx, src+"/", dst+"/"); err != nil {
			f.nodes.abortMove(mv)
		} else {
			f.nodes.commitMove(mv)
		}
	} else {
		if dstExists && dent.kind == kindDir {
			return syscall.EISDIR
		}
		mv := f.nodes.beginMove(src, dst, dstExists)
		if err = f.renameFile(ctx, src, dst, ent.size); err != nil {
			f.nodes.abortMove(mv)
		} else {
			f.nodes.commitMove(mv)
		}
	}
	if err != nil {
		f.log.Error(err, "rename", "key", src, "newKey", dst)
		return Errno(err)
	}
	f.log.V(1).Info("rename", "key", src, "newKey", dst)
	return 0
}

// renameFile moves the object src to dst. A staged file uploads its staged
// content to dst instead of copying (it may be newer than the object).
func (f *FS) renameFile(ctx context.Context, src, dst string, size int64) error {
	st := f.stateOf(src)
	var (
		gen    uint64
		etag   string
		staged bool
	)
	if st != nil {
		st.uploadMu.Lock()
		defer st.uploadMu.Unlock()
		// A stream that released parts completes at src first; the
		// object is then copied like any other.
		if err := f.settleLocked(ctx, st); err != nil {
			return err
		}
		_, _, staged = st.staged()
	}
	if staged {
		var err error
		if gen, etag, err = f.syncLocked(ctx, st, dst); err != nil {
			return err
		}
	} else if err := f.copyKeepingMeta(ctx, src, dst, size, true); err != nil {
		return err
	}
	if err := f.deleteObject(ctx, src); err != nil {
		return err
	}
	if other := f.stateOf(dst); other != nil && other != st {
		f.markDeleted(other) // overwritten by the rename
	}
	if st != nil {
		f.moveStates(src, dst)
		if staged {
			f.markUploaded(st, gen, etag) // records the new key too
		}
	}
	f.cache.put(src, statEntry{kind: kindMissing})
	f.cache.remove(dst)
	f.listings.remove(src)
	f.listings.forget(dst) // the next lookup of dst asks the bucket
	return nil
}

// renameDir moves every key under srcPrefix to dstPrefix: staged files are
// uploaded first, then all objects are copied, then the originals deleted.
// A failure before the deletes leaves the source complete.
func (f *FS) renameDir(ctx context.Context, srcPrefix, dstPrefix string) error {
	for _, ks := range f.dirtyStates() {
		if strings.HasPrefix(ks.key, srcPrefix) {
			if err := f.sync(ctx, ks.st); err != nil {
				return err
			}
		}
	}
	var keys []string
	sizes := make(map[string]int64)
	err := f.list(ctx, srcPrefix, "", func(out *s3.ListObjectsV2Output) error {
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
			sizes[aws.ToString(o.Key)] = aws.ToInt64(o.Size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = parallel(ctx, keys, func(ctx context.Context, key string) error {
		dst := dstPrefix + key[len(srcPrefix):]
		if strings.HasSuffix(key, "/") && sizes[key] == 0 {
			// A directory marker: versitygw refuses to copy one
			// (DirectoryObjectContainsData); a new empty marker with its
			// metadata is the same. The moved directory's ctime changes.
			meta, err := f.markerMeta(ctx, key)
			if err != nil {
				return err
			}
			if key == srcPrefix {
				meta = withPosix(meta, posixAttrs{ctime: time.Now(), hasCtime: true})
			}
			return f.putMarker(ctx, dst, meta)
		}
		return f.copyKeepingMeta(ctx, key, dst, sizes[key], false)
	})
	if err != nil {
		return err
	}
	// Objects first, then markers deepest first: a server that keeps
	// directories as directories (versitygw's posix backend) cannot delete
	// the marker of a directory that still holds something.
	var objects, markers []string
	for _, key := range keys {
		if strings.HasSuffix(key, "/") {
			markers = append(markers, key)
		} else {
			objects = append(objects, key)
		}
	}
	if err := parallel(ctx, objects, f.deleteObject); err != nil {
		return err
	}
	sort.Slice(markers, func(a, b int) bool { return len(markers[a]) > len(markers[b]) })
	for _, key := range markers {
		if err := f.deleteObject(ctx, key); err != nil {
			return err
		}
	}
	f.moveStates(srcPrefix, dstPrefix)
	src, dst := strings.TrimSuffix(srcPrefix, "/"), strings.TrimSuffix(dstPrefix, "/")
	f.cache.removePrefix(srcPrefix)
	f.cache.removePrefix(dstPrefix)
	f.cache.put(src, statEntry{kind: kindMissing})
	f.cache.put(dst, statEntry{kind: kindDir})
	f.listings.forgetPrefix(srcPrefix)
	f.listings.forgetPrefix(dstPrefix)
	f.listings.remove(src)
	f.listings.set(dst, statEntry{kind: kindDir})
	return nil
}

// moveStates re-keys the state of src (or, if src ends in "/", of every key
// under it) to dst. States already at the new keys are overwritten.
func (f *FS) moveStates(src, dst string) {
	f.mu.Lock()
	var moved, overwritten []*fileState
	for key, st := range f.files {
		if key == src || (strings.HasSuffix(src, "/") && strings.HasPrefix(key, src)) {
			moved = append(moved, st)
			delete(f.files, key)
		}
	}
	for _, st := range moved {
		st.mu.Lock()
		st.key = dst + st.key[len(src):]
		if old, ok := f.files[st.key]; ok {
			overwritten = append(overwritten, old)
		}
		f.files[st.key] = st
		st.mu.Unlock()
	}
	f.mu.Unlock()
	for _, st := range moved { // the journal names the new keys
		st.mu.Lock()
		if err := f.writeRecordLocked(st, st.dirtyLocked()); err != nil {
			f.log.Error(err, "staging record keeps the old key", "key", st.key)
		}
		st.mu.Unlock()
	}
	for _, old := range overwritten {
		old.mu.Lock()
		old.deleted = true
		old.mu.Unlock()
		f.maybeDrop(old)
	}
}

// parallel runs fn for each key, renameConcurrency at a time, and returns
// the first error (the remaining keys are skipped).
func parallel(ctx context.Context, keys []string, fn func(context.Context, string) error) error {
	return parallelN(ctx, renameConcurrency, keys, fn)
}

// parallelN is parallel with n at a time.
func parallelN(ctx context.Context, n int, keys []string, fn func(context.Context, string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan string)
	)
	for range min(n, len(keys)) {
		wg.Go(func() {
			for key := range next {
				if err := fn(ctx, key); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
feed:
	for _, key := range keys {
		select {
		case next <- key:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	return nil
}
