package s3fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// handle is one open file. Handles of the same key share its fileState;
// each has its own read-ahead pipeline for reads from the bucket.
type handle struct {
	fsys       *FS
	st         *fileState
	appendMode bool
	writable   bool

	mu       sync.Mutex
	ra       *readahead // nil while reads are random
	next     int64      // offset a sequential read would continue at
	reads    int        // reads from the bucket so far
	sizeHint int64      // object size when opened, -1 if unknown
}

var (
	_ fs.FileReader   = (*handle)(nil)
	_ fs.FileWriter   = (*handle)(nil)
	_ fs.FileFlusher  = (*handle)(nil)
	_ fs.FileFsyncer  = (*handle)(nil)
	_ fs.FileReleaser = (*handle)(nil)
)

func newHandle(f *FS, st *fileState, flags uint32, sizeHint int64) *handle {
	h := &handle{fsys: f, st: st, appendMode: flags&syscall.O_APPEND != 0, sizeHint: sizeHint,
		writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	if h.writable {
		st.mu.Lock()
		st.writers++
		st.mu.Unlock()
	}
	return h
}

// Read serves staged data if the file is staged, else ranged GETs with a
// read-ahead window that grows while reads are sequential.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if n, staged, err := h.fsys.readStaged(ctx, h.st, dest, off); staged {
		if err != nil {
			h.fsys.log.Error(err, "read", "offset", off)
			return nil, Errno(err)
		}
		return fuse.ReadResultData(dest[:n]), 0
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.mu.Lock()
	key := h.st.key
	h.st.mu.Unlock()
	if h.ra != nil && (h.ra.key != key || !h.ra.covers(off)) {
		h.dropReadaheadLocked()
	}
	if h.ra == nil {
		seq := h.reads > 0 && off >= h.next-seqSlack && off <= h.next+seqSlack
		if seq && (h.sizeHint < 0 || off < h.sizeHint) {
			h.startReadaheadLocked(key, off)
		}
	}
	h.reads++
	total := 0
	if h.ra != nil {
		n, err := h.readFromPipelineLocked(ctx, dest, off)
		if err != nil {
			h.fsys.log.Error(err, "read", "key", key, "offset", off)
			return nil, Errno(err)
		}
		total = n
	}
	// Not (fully) covered by read-ahead: read the rest directly. A short
	// answer means end of file to the kernel, so only the object's end may
	// cut it.
	if total < len(dest) && (h.ra == nil || !h.ra.eof) {
		n, err := h.fsys.getRangeInto(ctx, key, off+int64(total), dest[total:])
		if err != nil {
			h.fsys.log.Error(err, "read", "key", key, "offset", off+int64(total))
			return nil, Errno(err)
		}
		total += n
	}
	h.next = off + int64(total)
	return fuse.ReadResultData(dest[:total]), 0
}

// Write writes into the staging of the file, staging the object first.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.fsys.opts.ReadOnly {
		return 0, syscall.EROFS
	}
	h.mu.Lock()
	h.dropReadaheadLocked() // the bucket copy is stale for this handle now
	h.mu.Unlock()
	// An O_APPEND write goes to the end of what is staged, except a resent
	// one: the earlier server may have written it, and the kernel's offset
	// (its size of the file then) puts it in the same place again.
	var n int
	err := h.fsys.withRoom(ctx, func() (err error) {
		n, err = h.fsys.writeAt(ctx, h.st, data, off, h.appendMode && !resent(ctx))
		return err
	})
	if err != nil {
		h.fsys.log.Error(err, "write", "offset", off)
		return uint32(n), Errno(err)
	}
	h.fsys.waitStream(ctx, h.st)
	return uint32(n), 0
}

// Flush (every close) uploads the file if it has staged changes. A failed
// upload fails the close and keeps the data staged for a retry. A signal
// to the closing process does not cut it short: the mount answers no
// FUSE interrupt (MountOptions), so close(2) never fails with EINTR.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if err := h.fsys.sync(ctx, h.st); err != nil {
		return Errno(err)
	}
	return 0
}

// Fsync uploads like Flush.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.Flush(ctx)
}

// Release drops the handle; a file still dirty is retried in the background.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	h.dropReadaheadLocked()
	h.mu.Unlock()
	if h.writable {
		h.st.mu.Lock()
		h.st.writers--
		h.st.mu.Unlock()
	}
	h.fsys.releaseState(h.st)
	return 0
}
