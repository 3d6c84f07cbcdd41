package s3fs

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// startMinIO runs the MinIO server built by tests/s3servers/build-minio.sh
// (REKEY_MINIO_BIN) on a free loopback port with one bucket, and returns a
// plain SDK client for it. It skips when the binary is not configured
// (fails under CI=true).
func startMinIO(t *testing.T) *s3.Client {
	t.Helper()
	bin := os.Getenv("REKEY_MINIO_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("REKEY_MINIO_BIN is not set; build MinIO with tests/s3servers/build-minio.sh")
		}
		t.Skip("REKEY_MINIO_BIN is not set; run tests/s3servers/build-minio.sh to enable the MinIO tests")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const user, pass = "s3fstest", "s3fstest-secret"
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:0", filepath.Join(t.TempDir(), "data"))
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+pass, "MINIO_BROWSER=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	api := s3.New(s3.Options{
		BaseEndpoint: aws.String("http://" + addr), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: user, SecretAccessKey: pass}, nil
		}),
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := api.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(testBucket)})
		if err == nil {
			return api
		}
		if time.Now().After(deadline) {
			t.Fatalf("minio did not come up: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMultipartCopyMinIO: renaming an object larger than one CopyObject
// may copy goes through UploadPartCopy, on a real server.
func TestMultipartCopyMinIO(t *testing.T) {
	t.Parallel()
	api := startMinIO(t)
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
