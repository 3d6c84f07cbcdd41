package s3fs

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/go-logr/logr/testr"
	"github.com/hanwen/go-fuse/v2/fuse"

	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
)

const testBucket = fusetest.Bucket

// countingAPI counts the S3 calls the filesystem makes.
type countingAPI struct {
	API
	heads, lists, gets, puts, parts, completes, aborts atomic.Int64
	// failParts makes UploadPart, failCompletes CompleteMultipartUpload
	// fail with a 500 InternalError.
	failParts, failCompletes atomic.Bool
	// failPuts makes PutObject fail with a 500 InternalError.
	failPuts atomic.Bool
	// holdParts, while locked by a test, holds every UploadPart back;
	// holdCopies every CopyObject.
	holdParts, holdCopies sync.RWMutex
}

func (c *countingAPI) CopyObject(ctx context.Context, in *s3.CopyObjectInput, o ...func(*s3.Options)) (*s3.CopyObjectOutput, error) {
	c.holdCopies.RLock()
	c.holdCopies.RUnlock() //nolint:staticcheck // waits while a test holds copies back
	return c.API.CopyObject(ctx, in, o...)
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
	if c.failPuts.Load() {
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "injected"}
	}
	return c.API.PutObject(ctx, in, o...)
}

func (c *countingAPI) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	c.holdParts.RLock()
	c.holdParts.RUnlock() //nolint:staticcheck // waits while a test holds parts back
	c.parts.Add(1)
	if c.failParts.Load() {
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "injected"}
	}
	return c.API.UploadPart(ctx, in, o...)
}

func (c *countingAPI) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, o ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	c.completes.Add(1)
	if c.failCompletes.Load() {
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "injected"}
	}
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
	bucket *fusetest.Server
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
	bucket := fusetest.StartFake(t)
	fsKeys := fakes3.NewKeys("FS")
	bucket.Fake().AddKeys(fsKeys)
	e := &env{t: t, bucket: bucket, srv: bucket.Fake(), fsKeys: fsKeys, admin: bucket.Client(bucket.Admin), api: &countingAPI{API: bucket.Client(fsKeys)}}
	opts.Bucket = testBucket
	if opts.StagingDir == "" {
		opts.StagingDir = filepath.Join(t.TempDir(), "staging")
	}
	if opts.Logger.GetSink() == nil && testing.Verbose() {
		opts.Logger = testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	}
	var err error
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

func unmount(t *testing.T, srv *fuse.Server) { t.Helper(); fusetest.Unmount(t, srv) }

// path is the path of name inside the mount.
func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func (e *env) put(key string, data []byte) { e.t.Helper(); e.bucket.Put(e.t, key, data) }

// get returns the object, or an error that satisfies isNotFound.
func (e *env) get(key string) ([]byte, error) { return e.bucket.Get(e.t, key) }

func (e *env) mustGet(key string) []byte { e.t.Helper(); return e.bucket.MustGet(e.t, key) }

func (e *env) assertAbsent(key string) { e.t.Helper(); e.bucket.AssertAbsent(e.t, key) }

// keys lists every key in the bucket under prefix.
func (e *env) keys(prefix string) []string { e.t.Helper(); return e.bucket.Keys(e.t, prefix) }

func randomBytes(t *testing.T, n int) []byte { t.Helper(); return fusetest.RandomBytes(t, n) }

func sum(b []byte) string { return fusetest.Sum(b) }

// writeChunks writes data to path in chunks of chunk bytes and closes it.
func writeChunks(path string, data []byte, chunk int) error {
	return fusetest.WriteChunks(path, data, chunk)
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	fusetest.Eventually(t, timeout, what, cond)
}
