package s3fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sys/unix"
)

// A stream uploads a file that is being written sequentially while it is
// written: once a new file (created or truncated to zero, then written only
// at growing offsets) is larger than Options.MultipartThreshold, a
// multipart upload starts and every full part is uploaded (partConcurrency
// at a time) as soon as the writer has passed it. Close, fsync or flush
// then only uploads the tail and completes the upload.
//
// Staging stays bounded: a part the server has acknowledged is released
// from the staging file (a hole is punched where it was), and a writer
// that gets more than streamWindow parts ahead of the upload waits. So a
// file of any size needs about (streamWindow+1) parts of staging disk while
// it is written, and no data is held in memory.
//
// Data is released only once the server holds it, so nothing is lost:
//   - a failed part stays staged and is uploaded again by the next flush;
//   - once parts were released the upload is never aborted on failure: the
//     next flush (or the background retry) uploads the missing parts and
//     completes it with the parts the server already has;
//   - anything that needs released bytes back (a read of them, a write
//     below the uploaded parts, a truncate, a rename) first completes the
//     upload at the current size and drops the staging file; the file is
//     then an ordinary object, read with ranged GETs and staged again from
//     the bucket if it is written (FS.settle).
//
// Before any part is released a stream can still be dropped (a write into
// a part already handed to the upload, a truncate, a rename, an unlink):
// its upload is aborted in the background and the file is uploaded whole
// from staging at the next flush.
type stream struct {
	f        *FS
	key      string
	file     *os.File
	partSize int64
	ctx      context.Context
	cancel   context.CancelFunc
	created  chan struct{} // closed once CreateMultipartUpload returned
	uploadID *string       // set before created is closed; nil if it failed
	sem      chan struct{}
	wg       sync.WaitGroup
	queued   int // parts handed to the upload: [0, queued*partSize) is frozen
	// releaseFrom: parts below it are released from staging (guarded by
	// fileState.mu, like queued).
	releaseFrom int

	// pending counts parts handed to the upload and not yet answered;
	// progress gets a token whenever one is answered.
	pending  atomic.Int32
	progress chan struct{}

	mu    sync.Mutex
	parts []types.CompletedPart // by index; ETag nil until uploaded
	err   error
	etag  string // of the completed object, once finish succeeded
}

// streamWindow is how many parts a writer may be ahead of the upload.
const streamWindow = 2 * partConcurrency

// startStream begins a multipart upload of key from file in the background.
func (f *FS) startStream(key string, file *os.File, meta map[string]string) *stream {
	ctx, cancel := context.WithCancel(f.bgCtx)
	s := &stream{
		f: f, key: key, file: file, partSize: f.opts.PartSize, ctx: ctx, cancel: cancel,
		created: make(chan struct{}), sem: make(chan struct{}, partConcurrency),
		progress: make(chan struct{}, 1),
	}
	go func() {
		defer close(s.created)
		// Not cancelled with the stream: an abort waits for the upload
		// ID so that it can abort an upload the server has created.
		rctx, cancel := f.reqCtx(f.bgCtx)
		defer cancel()
		f.count(opCreateMultipart)
		out, err := f.api.CreateMultipartUpload(rctx, &s3.CreateMultipartUploadInput{
			Bucket: &f.opts.Bucket, Key: &key, ContentType: aws.String(contentType(key)), Metadata: meta,
		})
		if err != nil {
			s.fail(fmt.Errorf("create multipart upload %s: %w", key, err))
			return
		}
		s.uploadID = out.UploadId
	}()
	return s
}

// frozen is the offset below which data was handed to the upload.
func (s *stream) frozen() int64 { return int64(s.queued) * s.partSize }

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *stream) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// queue hands the next part, n bytes at frozen(), to the upload. Calls are
// serialised by the caller (fileState.mu).
func (s *stream) queue(n int64) {
	i := s.queued
	s.queued++
	s.mu.Lock()
	for len(s.parts) <= i {
		s.parts = append(s.parts, types.CompletedPart{})
	}
	s.mu.Unlock()
	s.launch(i, n)
}

// launch uploads part i (n bytes) in the background.
func (s *stream) launch(i int, n int64) {
	off := int64(i) * s.partSize
	s.pending.Add(1)
	s.wg.Add(1)
	done := s.f.space.uploading()
	go func() {
		defer s.wg.Done()
		defer done()
		defer func() {
			s.pending.Add(-1)
			select {
			case s.progress <- struct{}{}:
			default:
			}
		}()
		<-s.created
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			s.fail(fmt.Errorf("upload %s: %w", s.key, s.ctx.Err()))
			return
		}
		defer func() { <-s.sem }()
		if s.failed() != nil {
			return // the next finish uploads it
		}
		rctx, cancel := s.f.reqCtx(s.ctx)
		defer cancel()
		s.f.count(opUploadPart)
		out, err := s.f.api.UploadPart(rctx, &s3.UploadPartInput{
			Bucket: &s.f.opts.Bucket, Key: &s.key, UploadId: s.uploadID,
			PartNumber: aws.Int32(int32(i + 1)), Body: io.NewSectionReader(s.file, off, n), ContentLength: aws.Int64(n),
		})
		if err != nil {
			s.fail(fmt.Errorf("upload part %d of %s: %w", i+1, s.key, err))
			return
		}
		s.mu.Lock()
		s.parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
		s.mu.Unlock()
	}()
}

// waitWindow returns once at most streamWindow parts are pending, the
// stream ended, or ctx is done.
func (s *stream) waitWindow(ctx context.Context) {
	for s.pending.Load() > streamWindow {
		select {
		case <-s.progress:
		case <-s.ctx.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// releaseUploaded punches every uploaded part of st's stream out of the
// staging file (st.mu held, so no read of the staging runs meanwhile). A
// file system without hole punching keeps the data; nothing else changes.
func (f *FS) releaseUploaded(st *fileState) {
	defer f.chargeLocked(st)
	s := st.stream
	s.mu.Lock()
	defer s.mu.Unlock()
	// Parts below releaseFrom are all released: start after them, so a
	// write costs O(parts in flight), not O(parts of the file).
	for s.releaseFrom < len(st.released) && st.released[s.releaseFrom] {
		s.releaseFrom++
	}
	var acked []int
	for i := s.releaseFrom; i < len(s.parts); i++ {
		if s.parts[i].ETag != nil && (i >= len(st.released) || !st.released[i]) {
			acked = append(acked, i)
		}
	}
	if len(acked) == 0 {
		return
	}
	// The journal names the parts before their bytes leave the node, so
	// that a later process can complete the upload (journal.go).
	if err := f.recordAckedLocked(st, s, acked); err != nil {
		f.log.Error(err, "acknowledged parts stay staged: their record could not be written", "key", st.key)
		return
	}
	for _, i := range acked {
		err := unix.Fallocate(int(st.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(i)*s.partSize, s.partSize)
		if err != nil {
			f.log.V(1).Info("cannot release uploaded parts from staging", "key", st.key, "error", err.Error())
			return
		}
		for len(st.released) <= i {
			st.released = append(st.released, false)
		}
		st.released[i] = true
		st.releasedPart = s.partSize
	}
}

// hasReleasedLocked reports whether parts were punched out of the staging
// file of st (st.mu held): it is then no full copy of the file.
func (st *fileState) hasReleasedLocked() bool { return len(st.released) > 0 }

// overlapsReleasedLocked reports whether [off, off+n) of the staging file
// touches a released part (st.mu held).
func (st *fileState) overlapsReleasedLocked(off, n int64) bool {
	if n <= 0 || len(st.released) == 0 {
		return false
	}
	first, last := off/st.releasedPart, (off+n-1)/st.releasedPart
	for i := first; i <= last && i < int64(len(st.released)); i++ {
		if st.released[i] {
			return true
		}
	}
	return false
}

// finish uploads the rest of the first size bytes, any part that failed
// before, and completes the upload. It does not abort on failure: the
// caller decides (a stream with released parts must be finished later).
func (s *stream) finish(ctx context.Context, size int64) (err error) {
	s.wg.Wait() // nothing in flight: parts without an ETag failed
	<-s.created
	if s.uploadID == nil {
		return s.failed()
	}
	s.mu.Lock()
	s.err = nil
	var retry []int
	for i := range s.queued {
		if s.parts[i].ETag == nil {
			retry = append(retry, i)
		}
	}
	s.mu.Unlock()
	for _, i := range retry {
		s.launch(i, s.partSize) // every queued part is full
	}
	short := false // the last part queued here is the short tail
	for s.frozen() < size {
		if s.queued >= maxParts {
			s.fail(errors.New("too many parts for a streamed upload"))
			break
		}
		n := min(s.partSize, size-s.frozen())
		s.queue(n)
		short = n < s.partSize
	}
	s.wg.Wait()
	err = s.failed()
	if want := (size + s.partSize - 1) / s.partSize; err == nil && int64(s.queued) != want {
		err = fmt.Errorf("upload %s: streamed %d parts for %d bytes", s.key, s.queued, size)
	}
	defer func() {
		if err != nil && short {
			// The writer may still append: the tail is a full part
			// (or more) by the next finish, so forget the short one.
			s.queued--
			s.mu.Lock()
			s.parts = s.parts[:s.queued]
			s.mu.Unlock()
		}
	}()
	if err != nil {
		return err
	}
	rctx, cancel := s.f.reqCtx(ctx)
	defer cancel()
	s.f.count(opCompleteMultipart)
	s.mu.Lock()
	parts := append([]types.CompletedPart(nil), s.parts[:s.queued]...)
	s.mu.Unlock()
	out, err := s.f.api.CompleteMultipartUpload(rctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.f.opts.Bucket, Key: &s.key, UploadId: s.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		err = fmt.Errorf("complete multipart upload %s: %w", s.key, err)
		return err
	}
	s.etag = aws.ToString(out.ETag)
	s.cancel()
	return nil
}

// abort stops the stream and aborts its multipart upload.
func (s *stream) abort(ctx context.Context) {
	s.cancel()
	s.wg.Wait()
	<-s.created
	if s.uploadID == nil {
		return
	}
	s.f.abortMultipart(ctx, s.key, s.uploadID)
}

// breakStreamLocked drops the stream of st, if any, and aborts its upload
// in the background (st.mu held). The next flush uploads from staging, so
// callers make sure no part was released (FS.settle) unless the file is
// deleted.
func (f *FS) breakStreamLocked(st *fileState) {
	if st.stream == nil {
		return
	}
	s := st.stream
	st.stream = nil
	st.rec.uploadID, st.rec.partSize, st.rec.acked = "", 0, nil
	go s.abort(f.bgCtx)
}

// errStreamTooLarge fails a write that would need more parts than a
// multipart upload may have after parts were released from staging.
var errStreamTooLarge = fmt.Errorf("file exceeds %d parts of multipart_size: %w", maxParts, syscall.EFBIG)

// streamLocked starts or feeds the stream of st after a write (st.mu
// held): every full part the writer has passed is handed to the upload,
// and parts the server acknowledged are released from staging.
func (f *FS) streamLocked(st *fileState) error {
	if !st.streamable || st.deleted || st.file == nil {
		return nil
	}
	if st.stream == nil {
		if st.size <= f.opts.MultipartThreshold {
			return nil
		}
		st.stream = f.startStream(st.key, st.file, f.writerMetaLocked(st))
	}
	s := st.stream
	f.releaseUploaded(st)
	for s.frozen()+s.partSize <= st.size {
		if s.queued >= maxParts-1 { // the rest would not fit
			if st.hasReleasedLocked() {
				return errStreamTooLarge
			}
			st.streamable = false // upload whole later
			f.breakStreamLocked(st)
			return nil
		}
		s.queue(s.partSize)
	}
	return nil
}
