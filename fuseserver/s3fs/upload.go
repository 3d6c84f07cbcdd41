package s3fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// partConcurrency is how many parts of one multipart upload are in flight.
const partConcurrency = 4

// putFile uploads size bytes of r as key: one PutObject up to
// MultipartThreshold, a multipart upload above it. It returns the ETag of
// the new object (empty if the server sent none).
func (f *FS) putFile(ctx context.Context, key string, r io.ReaderAt, size int64, meta map[string]string) (string, error) {
	if size > f.opts.MultipartThreshold {
		return f.putMultipart(ctx, key, r, size, meta)
	}
	for attempt := 1; ; attempt++ {
		etag, err := f.putOnce(ctx, key, r, size, meta)
		// Another writer of the file changed the staged bytes between the
		// payload hash and the send: the server refused the body. Send
		// what the staging holds now; the writer's own flush sends its
		// later data.
		if err != nil && isPayloadMismatch(err) && attempt < maxPayloadRetries {
			continue
		}
		return etag, err
	}
}

// maxPayloadRetries bounds the uploads of one staging file that others
// write meanwhile.
const maxPayloadRetries = 5

// isPayloadMismatch reports whether the server refused a body that did not
// match its signed hash or MD5.
func isPayloadMismatch(err error) bool {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode() {
	case "XAmzContentSHA256Mismatch", "BadDigest", "InvalidDigest":
		return true
	}
	return false
}

func (f *FS) putOnce(ctx context.Context, key string, r io.ReaderAt, size int64, meta map[string]string) (string, error) {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opPut)
	out, err := f.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &f.opts.Bucket,
		Key:           &key,
		Body:          io.NewSectionReader(r, 0, size),
		ContentLength: aws.Int64(size),
		ContentType:   aws.String(contentType(key)),
		Metadata:      meta,
	})
	if err != nil {
		return "", fmt.Errorf("put %s: %w", key, err)
	}
	return aws.ToString(out.ETag), nil
}

// partSizeFor returns the part size for an object of size bytes, raised
// above Options.PartSize if it would otherwise need more than maxParts.
func (f *FS) partSizeFor(size int64) int64 {
	ps := f.opts.PartSize
	if min := (size + maxParts - 1) / maxParts; ps < min {
		ps = min
	}
	return ps
}

// putMultipart uploads r as key in parts, partConcurrency at a time, and
// aborts the upload if any step fails.
func (f *FS) putMultipart(ctx context.Context, key string, r io.ReaderAt, size int64, meta map[string]string) (etag string, err error) {
	cctx, cancel := f.reqCtx(ctx)
	f.count(opCreateMultipart)
	created, err := f.api.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{
		Bucket:      &f.opts.Bucket,
		Key:         &key,
		ContentType: aws.String(contentType(key)),
		Metadata:    meta,
	})
	cancel()
	if err != nil {
		return "", fmt.Errorf("create multipart upload %s: %w", key, err)
	}
	uploadID := created.UploadId
	defer func() {
		if err == nil {
			return
		}
		f.abortMultipart(ctx, key, uploadID)
	}()

	partSize := f.partSizeFor(size)
	nparts := int((size + partSize - 1) / partSize)
	parts := make([]types.CompletedPart, nparts)

	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for range min(partConcurrency, nparts) {
		wg.Go(func() {
			for i := range next {
				off := int64(i) * partSize
				n := min(partSize, size-off)
				rctx, cancel := f.reqCtx(pctx)
				f.count(opUploadPart)
				out, perr := f.api.UploadPart(rctx, &s3.UploadPartInput{
					Bucket:        &f.opts.Bucket,
					Key:           &key,
					UploadId:      uploadID,
					PartNumber:    aws.Int32(int32(i + 1)),
					Body:          io.NewSectionReader(r, off, n),
					ContentLength: aws.Int64(n),
				})
				cancel()
				mu.Lock()
				if perr != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("upload part %d of %s: %w", i+1, key, perr)
					}
					stop()
				} else {
					parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range nparts {
		select {
		case next <- i:
		case <-pctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return "", firstErr
	}
	if err := pctx.Err(); err != nil {
		return "", fmt.Errorf("upload %s: %w", key, err)
	}
	sort.Slice(parts, func(a, b int) bool { return aws.ToInt32(parts[a].PartNumber) < aws.ToInt32(parts[b].PartNumber) })

	cctx, cancel = f.reqCtx(ctx)
	defer cancel()
	f.count(opCompleteMultipart)
	done, err := f.api.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &f.opts.Bucket,
		Key:             &key,
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return "", fmt.Errorf("complete multipart upload %s: %w", key, err)
	}
	return aws.ToString(done.ETag), nil
}

// abortMultipart aborts a multipart upload (or copy) that failed, so the
// server drops its parts. The caller's context may be what failed, so the
// abort runs on a fresh one; its failure is only logged.
func (f *FS) abortMultipart(ctx context.Context, key string, uploadID *string) {
	actx, cancel := f.reqCtx(context.WithoutCancel(ctx))
	defer cancel()
	f.count(opAbortMultipart)
	if _, err := f.api.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket: &f.opts.Bucket, Key: &key, UploadId: uploadID,
	}); err != nil {
		f.log.Error(err, "abort multipart upload", "key", key)
	}
}
