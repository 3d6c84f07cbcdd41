package s3fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// dirContentType is the Content-Type of directory markers, as s3fs writes them.
const dirContentType = "application/x-directory"

// reqCtx bounds one S3 request by Options.RequestTimeout.
func (f *FS) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, f.opts.RequestTimeout)
}

// headFile stats the object key.
func (f *FS) headFile(ctx context.Context, key string) (statEntry, error) {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opHead)
	out, err := f.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &f.opts.Bucket, Key: &key})
	if err != nil {
		return statEntry{}, fmt.Errorf("head %s: %w", key, err)
	}
	meta := out.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return statEntry{kind: kindFile, size: aws.ToInt64(out.ContentLength), mtime: aws.ToTime(out.LastModified),
		meta: meta, ctype: aws.ToString(out.ContentType)}, nil
}

// probeDir reports whether anything (a marker or any object) exists under
// dirKey, which ends in "/", and whether the first thing is the marker.
func (f *FS) probeDir(ctx context.Context, dirKey string) (exists, marker bool, err error) {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opList)
	out, err := f.api.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &f.opts.Bucket, Prefix: &dirKey, MaxKeys: aws.Int32(1)})
	if err != nil {
		return false, false, fmt.Errorf("list %s: %w", dirKey, err)
	}
	marker = len(out.Contents) > 0 && aws.ToString(out.Contents[0].Key) == dirKey
	return len(out.Contents) > 0 || len(out.CommonPrefixes) > 0, marker, nil
}

// list pages through ListObjectsV2 under prefix and calls fn for each page.
// An empty delimiter lists recursively.
func (f *FS) list(ctx context.Context, prefix, delimiter string, fn func(*s3.ListObjectsV2Output) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &f.opts.Bucket, Prefix: &prefix}
	if delimiter != "" {
		in.Delimiter = &delimiter
	}
	for {
		rctx, cancel := f.reqCtx(ctx)
		f.count(opList)
		out, err := f.api.ListObjectsV2(rctx, in)
		cancel()
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		if err := fn(out); err != nil {
			return err
		}
		if !aws.ToBool(out.IsTruncated) || aws.ToString(out.NextContinuationToken) == "" {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// rangeResult is one ranged GET.
type rangeResult struct {
	data  []byte // shorter than asked at the end of the object; empty past it
	etag  string
	mtime time.Time
}

// getRange reads up to n bytes of key at off. If etag is not empty the
// object must still have that ETag.
func (f *FS) getRange(ctx context.Context, key string, off, n int64, etag string) (rangeResult, error) {
	buf := make([]byte, n)
	got, out, err := f.getRangeETag(ctx, key, off, buf, etag)
	if err != nil {
		return rangeResult{}, err
	}
	return rangeResult{data: buf[:got], etag: aws.ToString(out.ETag), mtime: aws.ToTime(out.LastModified)}, nil
}

// getRangeInto fills buf with the bytes of key at off; fewer only at the
// end of the object.
func (f *FS) getRangeInto(ctx context.Context, key string, off int64, buf []byte) (int, error) {
	n, _, err := f.getRangeETag(ctx, key, off, buf, "")
	return n, err
}

func (f *FS) getRangeETag(ctx context.Context, key string, off int64, buf []byte, etag string) (int, *s3.GetObjectOutput, error) {
	if len(buf) == 0 {
		return 0, &s3.GetObjectOutput{}, nil
	}
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	in := &s3.GetObjectInput{
		Bucket: &f.opts.Bucket,
		Key:    &key,
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(buf))-1)),
	}
	if etag != "" {
		in.IfMatch = &etag
	}
	f.count(opGet)
	out, err := f.api.GetObject(ctx, in)
	if err != nil {
		if isInvalidRange(err) {
			return 0, &s3.GetObjectOutput{}, nil
		}
		return 0, nil, fmt.Errorf("get %s at %d: %w", key, off, err)
	}
	defer out.Body.Close()
	got, err := io.ReadFull(out.Body, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, nil, fmt.Errorf("get %s at %d: read body: %w", key, off, err)
	}
	return got, out, nil
}

// putMarker creates the directory marker dirKey (ending in "/").
func (f *FS) putMarker(ctx context.Context, dirKey string, meta map[string]string) error {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opPut)
	_, err := f.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &f.opts.Bucket,
		Key:           &dirKey,
		Body:          strings.NewReader(""),
		ContentLength: aws.Int64(0),
		ContentType:   aws.String(dirContentType),
		Metadata:      meta,
	})
	if err != nil {
		return fmt.Errorf("put marker %s: %w", dirKey, err)
	}
	return nil
}

// deleteObject deletes key; a missing object is no error.
func (f *FS) deleteObject(ctx context.Context, key string) error {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opDelete)
	_, err := f.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &f.opts.Bucket, Key: &key})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// copyObject copies src to dst inside the bucket, replacing the user
// metadata with meta and the Content-Type with ctype.
func (f *FS) copyObject(ctx context.Context, src, dst string, meta map[string]string, ctype string) error {
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opCopy)
	_, err := f.api.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:            &f.opts.Bucket,
		Key:               &dst,
		CopySource:        aws.String(copySource(f.opts.Bucket, src)),
		MetadataDirective: types.MetadataDirectiveReplace,
		Metadata:          meta,
		ContentType:       aws.String(ctype),
	})
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// copySource is the URL-encoded "bucket/key" CopyObject expects.
func copySource(bucket, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return bucket + "/" + strings.Join(segs, "/")
}

// contentType guesses the Content-Type of key from its extension, without
// parameters (".txt" is "text/plain", as in s3fs's mime table, not Go's
// "text/plain; charset=utf-8").
func contentType(key string) string {
	if t := mime.TypeByExtension(path.Ext(key)); t != "" {
		t, _, _ = strings.Cut(t, ";")
		return strings.TrimSpace(t)
	}
	return "application/octet-stream"
}
