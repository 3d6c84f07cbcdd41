package s3fs

import (
	"context"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hanwen/go-fuse/v2/fs"
)

// What a process that takes a mount over does with the file handles and
// requests of the process before it (docs/resume.md).

var _ fs.NodeReopener = (*fileNode)(nil)

// Reopen makes the handle for a file handle an earlier server process
// issued, on its first use after a resume (fs.NodeReopener): an open with
// the flags the kernel sends, except that nothing is truncated again (the
// earlier open did that) and access is not checked again (the kernel did
// at open). The handle shares the key's state with every other: staged
// data the journal recovered for the key is what it reads and extends.
// Directories have no Reopen: go-fuse opens a fresh listing for them.
func (n *fileNode) Reopen(ctx context.Context, flags uint32) (fs.FileHandle, syscall.Errno) {
	f := n.fsys
	key, ok := n.key()
	if !ok {
		return nil, syscall.ESTALE
	}
	flags &^= syscall.O_TRUNC | syscall.O_CREAT | syscall.O_EXCL
	if f.opts.ReadOnly {
		flags = flags&^syscall.O_ACCMODE | syscall.O_RDONLY
	}
	st := f.reopenState(key)
	sizeHint := int64(-1)
	if ent := n.remembered(); ent.kind == kindFile {
		sizeHint = ent.size
	}
	return newHandle(f, st, flags, sizeHint), 0
}

// reopenState returns, with one more open reference, the state of key for
// a reopened handle: the one recovery made from the journal of the earlier
// process if it left staged data (the journal's recovered state is the
// key's state in FS.files, which acquireState returns), else the key's
// state as an open makes it.
func (f *FS) reopenState(key string) *fileState {
	f.mu.Lock()
	if st := f.lostStates[key]; st != nil {
		st.opens.Add(1)
		f.mu.Unlock()
		f.log.V(1).Info("reopen of a file whose staged data was retained", "key", key)
		return st
	}
	f.mu.Unlock()
	recovered := f.recovered(key) != nil
	f.log.V(1).Info("reopen", "key", key, "recovered", recovered)
	return f.acquireState(key)
}

// resent reports whether the request behind ctx is one the kernel sent
// again after a resume (FUSE_NOTIFY_RESEND): the earlier server may have
// carried it out before it died. go-fuse tells by a Resent method on the
// request's context; a context without one is a first sending.
func resent(ctx context.Context) bool {
	r, ok := ctx.(interface{ Resent() bool })
	return ok && r.Resent()
}

// replayedRename reports whether a resent RENAME of src to dst (node keys
// without the trailing slash) whose source is gone was carried out by
// the earlier server: dst exists, as a directory if isDir (go-fuse's tree
// tells what the kernel renames; unknown is either). If so, it does what
// the end of a rename does here: the caches and the nodes this process
// resolved under src follow.
func (f *FS) replayedRename(ctx context.Context, src, dst string, isDir *bool) bool {
	dent, errno := f.stat(ctx, dst)
	if errno != 0 || (isDir != nil && (dent.kind == kindDir) != *isDir) {
		return false
	}
	f.log.Info("resent rename already carried out", "key", src, "newKey", dst)
	f.cache.put(src, statEntry{kind: kindMissing})
	f.listings.remove(src)
	if dent.kind == kindDir {
		f.cache.removePrefix(src + "/")
		f.listings.forgetPrefix(src + "/")
		src, dst = src+"/", dst+"/"
	}
	f.nodes.commitMove(f.nodes.beginMove(src, dst, false))
	return true
}

// partialDirRename reports whether the directory dst holds what a rename
// of src to it that the earlier server began would leave: every key under
// one of them has its counterpart under the other (the copies made so
// far, or all of them and the sources deleted so far). A resent rename
// then goes on where that one stopped, rather than failing with
// ENOTEMPTY; anything else under dst is another's, and it fails.
func (f *FS) partialDirRename(ctx context.Context, srcPrefix, dstPrefix string) (bool, error) {
	rel := func(prefix string) (map[string]bool, error) {
		out := make(map[string]bool)
		err := f.list(ctx, prefix, "", func(page *s3.ListObjectsV2Output) error {
			for _, o := range page.Contents {
				if k := strings.TrimPrefix(aws.ToString(o.Key), prefix); k != "" {
					out[k] = true
				}
			}
			return nil
		})
		return out, err
	}
	src, err := rel(srcPrefix)
	if err != nil {
		return false, err
	}
	dst, err := rel(dstPrefix)
	if err != nil {
		return false, err
	}
	within := func(a, b map[string]bool) bool {
		for k := range a {
			if !b[k] {
				return false
			}
		}
		return true
	}
	return within(dst, src) || within(src, dst), nil
}
