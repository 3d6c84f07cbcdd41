package s3fs

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Read-ahead window of sequential reads from the bucket.
const (
	readWindowMin = 1 << 20
	readWindowMax = 8 << 20
)

// handle is one open file. Handles of the same key share its fileState;
// each has its own read-ahead buffer for reads from the bucket.
type handle struct {
	fsys       *FS
	st         *fileState
	appendMode bool

	mu     sync.Mutex
	buf    []byte // bytes [bufOff, bufOff+len(buf)) of the object
	bufOff int64
	bufEOF bool  // buf ends at the end of the object
	next   int64 // offset a sequential read would continue at
	window int64
}

var (
	_ fs.FileReader   = (*handle)(nil)
	_ fs.FileWriter   = (*handle)(nil)
	_ fs.FileFlusher  = (*handle)(nil)
	_ fs.FileFsyncer  = (*handle)(nil)
	_ fs.FileReleaser = (*handle)(nil)
)

func newHandle(f *FS, st *fileState, flags uint32) *handle {
	return &handle{fsys: f, st: st, appendMode: flags&syscall.O_APPEND != 0}
}

// Read serves staged data if the file is staged, else ranged GETs with a
// read-ahead window that grows while reads are sequential.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if file := h.st.stagedFile(); file != nil {
		n, err := file.ReadAt(dest, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, Errno(err)
		}
		return fuse.ReadResultData(dest[:n]), 0
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if n, ok := h.fromBuffer(dest, off); ok {
		h.next = off + int64(n)
		return fuse.ReadResultData(dest[:n]), 0
	}
	if off == h.next && h.window > 0 {
		h.window = min(h.window*2, readWindowMax)
	} else {
		h.window = readWindowMin
	}
	want := max(int64(len(dest)), h.window)
	h.st.mu.Lock()
	key := h.st.key
	h.st.mu.Unlock()
	res, err := h.fsys.getRange(ctx, key, off, want, "")
	if err != nil {
		h.fsys.log.Error(err, "read", "key", key, "offset", off)
		return nil, Errno(err)
	}
	h.buf, h.bufOff, h.bufEOF = res.data, off, int64(len(res.data)) < want
	n := copy(dest, h.buf)
	h.next = off + int64(n)
	return fuse.ReadResultData(dest[:n]), 0
}

// fromBuffer copies from the read-ahead buffer if it answers the read in
// full (or up to the end of the object).
func (h *handle) fromBuffer(dest []byte, off int64) (int, bool) {
	if h.buf == nil || off < h.bufOff {
		return 0, false
	}
	end := h.bufOff + int64(len(h.buf))
	if off >= end {
		return 0, h.bufEOF && off >= end
	}
	n := copy(dest, h.buf[off-h.bufOff:])
	return n, n == len(dest) || h.bufEOF
}

// Write writes into the staging of the file, staging the object first.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.fsys.opts.ReadOnly {
		return 0, syscall.EROFS
	}
	h.mu.Lock()
	h.buf = nil // the bucket copy is stale for this handle now
	h.mu.Unlock()
	n, err := h.fsys.writeAt(ctx, h.st, data, off, h.appendMode)
	if err != nil {
		h.fsys.log.Error(err, "write", "offset", off)
		return uint32(n), Errno(err)
	}
	return uint32(n), 0
}

// Flush (every close) uploads the file if it has staged changes. A failed
// upload fails the close and keeps the data staged for a retry.
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
	h.fsys.releaseState(h.st)
	return 0
}
