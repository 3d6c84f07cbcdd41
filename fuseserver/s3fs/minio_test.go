package s3fs

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/internal/fusetest"
)

// TestMultipartCopyMinIO: renaming an object larger than one CopyObject
// may copy goes through UploadPartCopy, on a real server.
func TestMultipartCopyMinIO(t *testing.T) {
	t.Parallel()
	srv := fusetest.StartMinIO(t)
	api := srv.Client(srv.Admin)
	fsys, err := New(api, Options{Bucket: testBucket, StagingDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fsys.Close() }()
	fsys.maxCopy, fsys.copyPart = 6<<20, MinPartSize // 12 MiB: 3 parts
	data := randomBytes(t, 12<<20+5)
	ctx := context.Background()
	if _, err := api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("big.bin"),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatal(err)
	}
	if err := fsys.renameFile(ctx, "big.bin", "dir/moved.bin", int64(len(data))); err != nil {
		t.Fatalf("rename: %v", err)
	}
	if got := fsys.RequestCounts()["UploadPartCopy"]; got != 3 {
		t.Fatalf("UploadPartCopy requests = %d, want 3", got)
	}
	out, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("dir/moved.bin")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copied object differs (%d bytes, %v)", len(got), err)
	}
	if _, err := api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("big.bin")}); err == nil {
		t.Fatalf("source still exists after rename")
	}
}
