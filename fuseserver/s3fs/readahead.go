package s3fs

import (
	"context"
	"sync"
)

// Read-ahead of sequential reads from the bucket: once a handle reads
// sequentially, it keeps ranged GETs of readChunkSize in flight ahead of
// the reader: 2 at first, doubling up to readAheadChunks whenever the
// reader had to wait for a chunk still in flight (the server is slower
// than the reader, so more parallel GETs help), and staying put while the
// reader finds its data ready. Random reads fetch exactly what was asked.
//
// Memory is bounded twice: per handle by readAheadChunks, and per FS by
// Options.ReadAheadBuffers chunks shared by all handles; a handle that
// cannot get a buffer reads without read-ahead.
const (
	readChunkSize   = 8 << 20
	readAheadChunks = 8
	// seqSlack is how far a read may start from where the previous one
	// ended and still count as sequential (the kernel reorders its
	// asynchronous read-ahead requests).
	seqSlack = 1 << 20
)

// bufPool hands out read-ahead chunk buffers, at most max at a time.
type bufPool struct {
	size int
	sem  chan struct{}
	pool sync.Pool
}

func newBufPool(size, max int) *bufPool {
	p := &bufPool{size: size, sem: make(chan struct{}, max)}
	p.pool.New = func() any { b := make([]byte, size); return &b }
	return p
}

// tryGet returns a buffer, or nil if max buffers are out.
func (p *bufPool) tryGet() *[]byte {
	select {
	case p.sem <- struct{}{}:
		return p.pool.Get().(*[]byte)
	default:
		return nil
	}
}

func (p *bufPool) put(b *[]byte) {
	p.pool.Put(b)
	<-p.sem
}

// chunk is one ranged GET of the read-ahead pipeline.
type chunk struct {
	off    int64
	buf    *[]byte
	cancel context.CancelFunc
	done   chan struct{}
	n      int   // valid after done
	err    error // valid after done
}

// full reports whether the chunk filled its buffer (more object follows).
func (c *chunk) full() bool { return c.err == nil && c.n == len(*c.buf) }

// startChunk fetches readChunkSize bytes of key at off into a pooled buffer
// in the background. It returns nil if no buffer is free.
func (f *FS) startChunk(key string, off int64) *chunk {
	buf := f.readBufs.tryGet()
	if buf == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(f.bgCtx)
	c := &chunk{off: off, buf: buf, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.n, c.err = f.getRangeInto(ctx, key, off, *buf)
	}()
	return c
}

// drop cancels c and returns its buffer once its request has ended.
func (f *FS) dropChunk(c *chunk) {
	c.cancel()
	go func() {
		<-c.done
		f.readBufs.put(c.buf)
	}()
}

// readahead is the pipeline of one handle. Guarded by handle.mu.
type readahead struct {
	key    string
	chunks []*chunk // contiguous, ascending, ending at next
	next   int64    // offset of the next chunk to schedule
	ahead  int      // chunks to keep in flight
	eof    bool     // a chunk ended the object: schedule no more
}

// covers reports whether off is inside the scheduled range.
func (r *readahead) covers(off int64) bool {
	return len(r.chunks) > 0 && off >= r.chunks[0].off && off < r.next
}

// dropReadaheadLocked cancels the handle's pipeline (h.mu held).
func (h *handle) dropReadaheadLocked() {
	if h.ra == nil {
		return
	}
	for _, c := range h.ra.chunks {
		h.fsys.dropChunk(c)
	}
	h.ra = nil
}

// startReadaheadLocked starts a pipeline at off (h.mu held). It returns
// false if no buffer was free.
func (h *handle) startReadaheadLocked(key string, off int64) bool {
	h.dropReadaheadLocked()
	c := h.fsys.startChunk(key, off)
	if c == nil {
		return false
	}
	h.ra = &readahead{key: key, chunks: []*chunk{c}, next: off + readChunkSize, ahead: 2}
	h.topUpLocked()
	return true
}

// topUpLocked schedules chunks until ahead are in flight, not past the
// known size of the object.
func (h *handle) topUpLocked() {
	r := h.ra
	for len(r.chunks) < r.ahead && !r.eof {
		if h.sizeHint >= 0 && r.next >= h.sizeHint {
			return
		}
		c := h.fsys.startChunk(r.key, r.next)
		if c == nil {
			return
		}
		r.chunks = append(r.chunks, c)
		r.next += readChunkSize
	}
}

// chunkAt returns the scheduled chunk holding off, or nil.
func (r *readahead) chunkAt(off int64) *chunk {
	for _, c := range r.chunks {
		if off >= c.off && off < c.off+readChunkSize {
			return c
		}
	}
	return nil
}

// readFromPipelineLocked copies into dest from the pipeline, which covers
// off, waiting for chunks as needed. It returns the bytes copied; fewer
// than len(dest) at the end of the object or of the scheduled range.
func (h *handle) readFromPipelineLocked(ctx context.Context, dest []byte, off int64) (int, error) {
	r := h.ra
	total := 0
	waited := false
	for total < len(dest) {
		c := r.chunkAt(off)
		if c == nil {
			break
		}
		select {
		case <-c.done:
		default:
			waited = true
			select {
			case <-c.done:
			case <-ctx.Done():
				return total, ctx.Err()
			}
		}
		if c.err != nil {
			err := c.err
			h.dropReadaheadLocked()
			return total, err
		}
		if !c.full() {
			r.eof = true
		}
		rel := int(off - c.off)
		if rel >= c.n { // at or past the end of the object
			break
		}
		n := copy(dest[total:], (*c.buf)[rel:c.n])
		total += n
		off += int64(n)
	}
	// Drop the chunks the reader has passed; keep the rest going.
	for len(r.chunks) > 0 && off >= r.chunks[0].off+readChunkSize {
		h.fsys.dropChunk(r.chunks[0])
		r.chunks = r.chunks[1:]
	}
	if waited && r.ahead < readAheadChunks {
		r.ahead = min(2*r.ahead, readAheadChunks)
	}
	h.topUpLocked()
	return total, nil
}
