package s3fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/go-logr/logr/testr"
	"github.com/hanwen/go-fuse/v2/fuse"

	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

const testBucket = "bucket"

// countingAPI counts the S3 calls the filesystem makes.
type countingAPI struct {
	API
	heads, lists, gets, puts, parts, completes, aborts atomic.Int64
	// failParts makes UploadPart fail with a 500 InternalError.
	failParts atomic.Bool
}

func (c *countingAPI) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	c.heads.Add(1)
	return c.API.HeadObject(ctx, in, o...)
}

func (c *countingAPI) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, o ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	c.lists.Add(1)
	return c.API.ListObjectsV2(ctx, in, o...)
}

func (c *countingAPI) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.gets.Add(1)
	return c.API.GetObject(ctx, in, o...)
}

func (c *countingAPI) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.puts.Add(1)
	return c.API.PutObject(ctx, in, o...)
}

func (c *countingAPI) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	c.parts.Add(1)
	if c.failParts.Load() {
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "injected"}
	}
	return c.API.UploadPart(ctx, in, o...)
}

func (c *countingAPI) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, o ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	c.completes.Add(1)
	return c.API.CompleteMultipartUpload(ctx, in, o...)
}

func (c *countingAPI) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, o ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	c.aborts.Add(1)
	return c.API.AbortMultipartUpload(ctx, in, o...)
}

// env is one fake S3 server with a mounted FS. The FS signs with fsKeys;
// the test inspects the bucket with admin, signed with other keys, so that
// revoking fsKeys does not blind the test.
type env struct {
	t      *testing.T
	srv    *fakes3.Server
	fsKeys keys.Keys
	admin  *s3.Client
	api    *countingAPI
	fsys   *FS
	dir    string
	server *fuse.Server
}

// newEnv starts a server and mounts an FS configured by opts (Bucket and
// StagingDir are filled in) unless mount is false.
func newEnv(t *testing.T, opts Options, mount bool) *env {
	t.Helper()
	fsKeys, adminKeys := fakes3.NewKeys("FS"), fakes3.NewKeys("ADMIN")
	srv, err := fakes3.Start(fsKeys, testBucket)
	if err != nil {
		t.Fatalf("start fakes3: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	srv.AddKeys(adminKeys)
	e := &env{t: t, srv: srv, fsKeys: fsKeys, admin: srv.Client(adminKeys), api: &countingAPI{API: srv.Client(fsKeys)}}
	opts.Bucket = testBucket
	if opts.StagingDir == "" {
		opts.StagingDir = filepath.Join(t.TempDir(), "staging")
	}
	if opts.Logger.GetSink() == nil && testing.Verbose() {
		opts.Logger = testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	}
	e.fsys, err = New(e.api, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.fsys.Close() })
	if mount {
		e.dir = t.TempDir()
		e.server, err = Mount(e.dir, e.fsys, false)
		if err != nil {
			t.Fatalf("Mount: %v", err)
		}
		t.Cleanup(func() { unmount(t, e.server) })
	}
	return e
}

func unmount(t *testing.T, srv *fuse.Server) {
	t.Helper()
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmount: %v", err)
}

// path is the path of name inside the mount.
func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func (e *env) put(key string, data []byte) {
	e.t.Helper()
	_, err := e.admin.PutObject(e.t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(testBucket), Key: aws.String(key), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
}

// get returns the object, or an error that satisfies isNotFound.
func (e *env) get(key string) ([]byte, error) {
	out, err := e.admin.GetObject(e.t.Context(), &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func (e *env) mustGet(key string) []byte {
	e.t.Helper()
	data, err := e.get(key)
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	return data
}

func (e *env) assertAbsent(key string) {
	e.t.Helper()
	if _, err := e.get(key); !isNotFound(err) {
		e.t.Fatalf("object %s: got err %v, want not found", key, err)
	}
}

// keys lists every key in the bucket under prefix.
func (e *env) keys(prefix string) []string {
	e.t.Helper()
	var out []string
	p := s3.NewListObjectsV2Paginator(e.admin, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(e.t.Context())
		if err != nil {
			e.t.Fatalf("list: %v", err)
		}
		for _, o := range page.Contents {
			out = append(out, aws.ToString(o.Key))
		}
	}
	return out
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeChunks writes data to path in chunks of chunk bytes and closes it.
func writeChunks(path string, data []byte, chunk int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += chunk {
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
