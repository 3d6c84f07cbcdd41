package s3fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// maxCopyObjectSize is the largest object one CopyObject may copy (S3
// limit); larger objects are copied part by part with UploadPartCopy, in
// parts of copyPartSize. FS.maxCopy and FS.copyPart hold them so that tests
// can lower them.
const (
	maxCopyObjectSize int64 = 5 << 30
	copyPartSize      int64 = 512 << 20
)

// partCopier is the optional part of API for multipart copies; *s3.Client
// has it. Without it objects over maxCopyObjectSize cannot be renamed.
type partCopier interface {
	UploadPartCopy(ctx context.Context, in *s3.UploadPartCopyInput, optFns ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error)
}

// copyObjectSized copies src (size bytes) to dst with the user metadata
// meta and the Content-Type ctype: CopyObject (REPLACE) up to FS.maxCopy,
// else a multipart copy. src may be dst: a change of metadata only, with
// no data sent.
func (f *FS) copyObjectSized(ctx context.Context, src, dst string, size int64, meta map[string]string, ctype string) error {
	if size <= f.maxCopy {
		return f.copyObject(ctx, src, dst, meta, ctype)
	}
	pc, ok := f.api.(partCopier)
	if !ok {
		return fmt.Errorf("copy %s to %s: %d bytes need UploadPartCopy, which the client lacks: %w", src, dst, size, syscall.EFBIG)
	}
	return f.multipartCopy(ctx, pc, src, dst, size, meta, ctype)
}

// multipartCopy copies src to dst with UploadPartCopy, partConcurrency parts
// at a time, aborting the upload on failure; dst gets meta and ctype.
func (f *FS) multipartCopy(ctx context.Context, pc partCopier, src, dst string, size int64, meta map[string]string, ctype string) (err error) {
	cctx, cancel := f.reqCtx(ctx)
	f.count(opCreateMultipart)
	created, err := f.api.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{
		Bucket: &f.opts.Bucket, Key: &dst, ContentType: aws.String(ctype), Metadata: meta,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("create multipart copy %s: %w", dst, err)
	}
	id := created.UploadId
	defer func() {
		if err == nil {
			return
		}
		f.abortMultipart(ctx, dst, id)
	}()
	partSize := max(f.copyPart, (size+maxParts-1)/maxParts)
	n := int((size + partSize - 1) / partSize)
	parts := make([]types.CompletedPart, n)
	source := aws.String(copySource(f.opts.Bucket, src))
	idx := make([]string, n)
	for i := range idx {
		idx[i] = fmt.Sprint(i)
	}
	var mu sync.Mutex
	next := 0
	err = parallel(ctx, idx, func(ctx context.Context, _ string) error {
		mu.Lock()
		i := next
		next++
		mu.Unlock()
		off := int64(i) * partSize
		end := min(off+partSize, size) - 1
		rctx, cancel := f.reqCtx(ctx)
		defer cancel()
		f.count(opUploadPartCopy)
		out, err := pc.UploadPartCopy(rctx, &s3.UploadPartCopyInput{
			Bucket: &f.opts.Bucket, Key: &dst, UploadId: id, PartNumber: aws.Int32(int32(i + 1)),
			CopySource: source, CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		})
		if err == nil && out.CopyPartResult == nil {
			err = errors.New("no CopyPartResult in the answer")
		}
		if err != nil {
			return fmt.Errorf("copy part %d of %s to %s: %w", i+1, src, dst, err)
		}
		parts[i] = types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(int32(i + 1))}
		return nil
	})
	if err != nil {
		return err
	}
	cctx, cancel = f.reqCtx(ctx)
	defer cancel()
	f.count(opCompleteMultipart)
	if _, err = f.api.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{
		Bucket: &f.opts.Bucket, Key: &dst, UploadId: id, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		return fmt.Errorf("complete multipart copy %s: %w", dst, err)
	}
	return nil
}
