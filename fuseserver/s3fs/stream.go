package s3fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// A stream uploads a file that is being written sequentially while it is
// written: once a new file (created or truncated to zero, then written only
// at growing offsets) is larger than Options.MultipartThreshold, a
// multipart upload starts and every full part is uploaded (partConcurrency
// at a time) as soon as the writer has passed it. Close, fsync or flush
// then only uploads the tail and completes the upload.
//
// The staging file stays the durable copy: parts are read from it, and it
// is only dropped once the object is complete, so a failed stream loses
// nothing. A write into a region already handed to the upload, a truncate,
// a rename or an unlink breaks the stream (aborted in the background), and
// the file is uploaded whole from staging at the next flush as before. A
// failed part fails the flush with its errno; the data stays staged and the
// next flush (or the background retry) uploads it whole.
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

	mu    sync.Mutex
	parts []types.CompletedPart
	err   error
}

// startStream begins a multipart upload of key from file in the background.
func (f *FS) startStream(key string, file *os.File) *stream {
	ctx, cancel := context.WithCancel(f.bgCtx)
	s := &stream{
		f: f, key: key, file: file, partSize: f.opts.PartSize, ctx: ctx, cancel: cancel,
		created: make(chan struct{}), sem: make(chan struct{}, partConcurrency),
	}
	go func() {
		defer close(s.created)
		rctx, cancel := f.reqCtx(ctx)
		defer cancel()
		f.count(opCreateMultipart)
		out, err := f.api.CreateMultipartUpload(rctx, &s3.CreateMultipartUploadInput{
			Bucket: &f.opts.Bucket, Key: &key, ContentType: aws.String(contentType(key)),
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

// queue uploads the next part, n bytes at frozen(), in the background.
// Calls are serialised by the caller (fileState.mu, or the stream is no
// longer reachable from the state).
func (s *stream) queue(n int64) {
	i := s.queued
	s.queued++
	off := int64(i) * s.partSize
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-s.created
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			s.fail(fmt.Errorf("upload %s: %w", s.key, s.ctx.Err()))
			return
		}
		defer func() { <-s.sem }()
		if s.failed() != nil {
			return
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
		for len(s.parts) <= i {
			s.parts = append(s.parts, types.CompletedPart{})
		}
		s.parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
		s.mu.Unlock()
	}()
}

// finish uploads the rest of the first size bytes and completes the
// upload; on failure it aborts the upload and returns the error.
func (s *stream) finish(ctx context.Context, size int64) error {
	for s.frozen() < size {
		if s.queued >= maxParts {
			s.fail(errors.New("too many parts for a streamed upload"))
			break
		}
		s.queue(min(s.partSize, size-s.frozen()))
	}
	s.wg.Wait()
	err := s.failed()
	if want := (size + s.partSize - 1) / s.partSize; err == nil && int64(s.queued) != want {
		err = fmt.Errorf("upload %s: streamed %d parts for %d bytes", s.key, s.queued, size)
	}
	if err == nil {
		rctx, cancel := s.f.reqCtx(ctx)
		s.f.count(opCompleteMultipart)
		_, err = s.f.api.CompleteMultipartUpload(rctx, &s3.CompleteMultipartUploadInput{
			Bucket: &s.f.opts.Bucket, Key: &s.key, UploadId: s.uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: s.parts},
		})
		cancel()
		if err != nil {
			err = fmt.Errorf("complete multipart upload %s: %w", s.key, err)
		}
	}
	if err != nil {
		s.abort(ctx)
		return err
	}
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
// in the background (st.mu held). The next flush uploads from staging.
func (f *FS) breakStreamLocked(st *fileState) {
	if st.stream == nil {
		return
	}
	s := st.stream
	st.stream = nil
	go s.abort(f.bgCtx)
}

// streamLocked starts or feeds the stream of st after a write (st.mu
// held): every full part the writer has passed is handed to the upload.
func (f *FS) streamLocked(st *fileState) {
	if !st.streamable || st.deleted || st.file == nil {
		return
	}
	if st.stream == nil {
		if st.size <= f.opts.MultipartThreshold {
			return
		}
		st.stream = f.startStream(st.key, st.file)
	}
	s := st.stream
	for s.frozen()+s.partSize <= st.size {
		if s.queued >= maxParts-1 { // the rest would not fit: upload whole later
			st.streamable = false
			f.breakStreamLocked(st)
			return
		}
		s.queue(s.partSize)
	}
}
