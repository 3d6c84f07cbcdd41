// Package fusetest is the harness the FUSE tests share: S3 servers to run
// against (the in-process fakes3, a MinIO or a versitygw process) with keys
// that can be issued and revoked while a test runs, helpers to put and
// inspect objects behind the mount's back, and small file helpers. It is
// imported only by tests; package rekeyfuse below it mounts a whole
// rekey-fuse server in process.
package fusetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

// Bucket is the bucket every server starts with.
const Bucket = "bucket"

// Server is an S3 server for one test. Admin keys sign the test's own
// requests; keys the filesystem uses come from Issue, so revoking them
// never blinds the test.
type Server struct {
	Name  string    // "fakes3", "minio" or "versitygw"
	URL   string    // http://127.0.0.1:port
	Admin keys.Keys // root keys

	fake   *fakes3.Server
	issue  func(ctx context.Context, k keys.Keys) error
	revoke func(ctx context.Context, k keys.Keys) error
}

// Host is the host:port of the server.
func (s *Server) Host() string { return strings.TrimPrefix(s.URL, "http://") }

// Client returns a path-style S3 client for the server signed with k.
func (s *Server) Client(k keys.Keys) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.URL),
		Region:       fakes3.Region,
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}, nil
		}),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Issue creates new keys with read-write access to Bucket and waits until
// the server accepts them. It satisfies loadcheck.KeyIssuer.
func (s *Server) Issue(ctx context.Context) (keys.Keys, error) {
	k := fakes3.NewKeys("AKRK")
	return k, s.Restore(ctx, k)
}

// Restore creates k on the server (again, after Revoke).
func (s *Server) Restore(ctx context.Context, k keys.Keys) error {
	if err := s.issue(ctx, k); err != nil {
		return fmt.Errorf("%s: create keys %s: %w", s.Name, k.AccessKeyID, err)
	}
	return s.waitAccepted(ctx, k, true)
}

// Revoke removes k from the server and waits until the server refuses it.
func (s *Server) Revoke(ctx context.Context, k keys.Keys) error {
	if err := s.revoke(ctx, k); err != nil {
		return fmt.Errorf("%s: revoke keys %s: %w", s.Name, k.AccessKeyID, err)
	}
	return s.waitAccepted(ctx, k, false)
}

// waitAccepted polls a signed ListObjectsV2 until the server's answer to k
// is want (accepted or refused).
func (s *Server) waitAccepted(ctx context.Context, k keys.Keys, want bool) error {
	c := s.Client(k)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(Bucket), MaxKeys: aws.Int32(1)})
		if (err == nil) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: keys %s still accepted=%v after 10s: %w", s.Name, k.AccessKeyID, !want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartFake starts the in-process fakes3 server.
func StartFake(t testing.TB) *Server {
	t.Helper()
	admin := fakes3.NewKeys("ADMIN")
	srv, err := fakes3.Start(admin, Bucket)
	if err != nil {
		t.Fatalf("start fakes3: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &Server{Name: "fakes3", URL: srv.URL, Admin: admin, fake: srv,
		issue:  func(_ context.Context, k keys.Keys) error { srv.AddKeys(k); return nil },
		revoke: func(_ context.Context, k keys.Keys) error { srv.RevokeKeys(k); return nil },
	}
}

// Fake returns the in-process server behind a Server made by StartFake, or
// nil.
func (s *Server) Fake() *fakes3.Server { return s.fake }

// Binary returns the path in the environment variable env, or skips the
// test; under CI=true it fails instead, so that CI never passes by skipping.
func Binary(t testing.TB, env, script string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; build it with %s", env, script)
		}
		t.Skipf("%s is not set; run %s to enable these tests", env, script)
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // the path comes from the test environment by design
		t.Fatalf("%s: %v", env, err)
	}
	return bin
}

// freeAddr returns a free 127.0.0.1 address.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// LockedBuffer collects output of several writers (a process, a logger)
// for a failure message; it keeps the first 64 KiB, or all of it with All.
type LockedBuffer struct {
	All bool // keep everything, for output a test searches

	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.All && b.b.Len() > 64<<10 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startProcess runs cmd until the test ends and waits until the server
// answers s.Admin by creating Bucket.
func startProcess(t testing.TB, s *Server, cmd *exec.Cmd) {
	t.Helper()
	out := &LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := forkSafe(cmd).Start(); err != nil {
		t.Fatalf("start %s: %v", s.Name, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := s.Client(s.Admin)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(Bucket)})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %v\n%s", s.Name, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StartMinIO runs the MinIO server of tests/s3servers/build-minio.sh
// (REKEY_MINIO_BIN) on a free loopback port with Bucket. Keys are issued as
// MinIO users with the readwrite policy through `mc admin`
// (tests/s3servers/build-mc.sh, REKEY_MC_BIN; only Issue, Restore and
// Revoke need it). Skips without the server binary, fails under CI=true.
func StartMinIO(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t, "REKEY_MINIO_BIN", "tests/s3servers/build-minio.sh")
	dir := t.TempDir()
	s := &Server{Name: "minio", URL: "http://" + freeAddr(t), Admin: keys.Keys{AccessKeyID: "rekeyroot", SecretAccessKey: "rekeyroot-secret"}}
	cmd := exec.Command(bin, "server", "--quiet", "--address", s.Host(), "--console-address", "127.0.0.1:0", filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.Admin.AccessKeyID, "MINIO_ROOT_PASSWORD="+s.Admin.SecretAccessKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	startProcess(t, s, cmd)
	alias := "MC_HOST_rk=http://" + s.Admin.AccessKeyID + ":" + s.Admin.SecretAccessKey + "@" + s.Host()
	run := func(ctx context.Context, args ...string) error {
		mc := os.Getenv("REKEY_MC_BIN")
		if mc == "" {
			return errors.New("REKEY_MC_BIN is not set; build mc with tests/s3servers/build-mc.sh")
		}
		//nolint:gosec // the binary comes from the test environment by design, no shell
		c := exec.CommandContext(ctx, mc, append([]string{"--config-dir", filepath.Join(dir, "mc"), "--quiet", "--no-color"}, args...)...)
		c.Env = append(os.Environ(), alias)
		if out, err := forkSafe(c).CombinedOutput(); err != nil {
			return fmt.Errorf("mc %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	s.issue = func(ctx context.Context, k keys.Keys) error {
		if err := run(ctx, "admin", "user", "add", "rk", k.AccessKeyID, k.SecretAccessKey); err != nil {
			return err
		}
		return run(ctx, "admin", "policy", "attach", "rk", "readwrite", "--user", k.AccessKeyID)
	}
	s.revoke = func(ctx context.Context, k keys.Keys) error {
		return run(ctx, "admin", "user", "remove", "rk", k.AccessKeyID)
	}
	return s
}

// StartVersityGW runs versitygw of tests/s3servers/build-versitygw.sh
// (REKEY_VERSITYGW_BIN) with its posix backend and internal IAM (cache off,
// so a deleted user is refused at once) on a free loopback port. Keys are
// issued with `versitygw admin create-user` in the admin role: versitygw's
// user role reaches only buckets the user owns, and a bucket has one owner,
// which a rotation would have to move before the swap. Skips without the
// binary, fails under CI=true.
func StartVersityGW(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t, "REKEY_VERSITYGW_BIN", "tests/s3servers/build-versitygw.sh")
	dir := t.TempDir()
	for _, d := range []string{"data", "iam"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Name: "versitygw", URL: "http://" + freeAddr(t), Admin: keys.Keys{AccessKeyID: "rekeyroot", SecretAccessKey: "rekeyroot-secret"}}
	cmd := exec.Command(bin, "--access", s.Admin.AccessKeyID, "--secret", s.Admin.SecretAccessKey, "--port", s.Host(),
		"--iam-dir", filepath.Join(dir, "iam"), "--iam-cache-disable", "posix", filepath.Join(dir, "data"))
	startProcess(t, s, cmd)
	run := func(ctx context.Context, args ...string) error {
		c := exec.CommandContext(ctx, bin, append([]string{"admin", "--access", s.Admin.AccessKeyID, "--secret", s.Admin.SecretAccessKey,
			"--endpoint-url", s.URL}, args...)...)
		if out, err := forkSafe(c).CombinedOutput(); err != nil {
			return fmt.Errorf("versitygw admin %s: %w: %s", args[0], err, bytes.TrimSpace(out))
		}
		return nil
	}
	s.issue = func(ctx context.Context, k keys.Keys) error {
		return run(ctx, "create-user", "--access", k.AccessKeyID, "--secret", k.SecretAccessKey, "--role", "admin")
	}
	s.revoke = func(ctx context.Context, k keys.Keys) error {
		return run(ctx, "delete-user", "--access", k.AccessKeyID)
	}
	return s
}

// Put stores data as key with the admin keys.
func (s *Server) Put(t testing.TB, key string, data []byte) {
	t.Helper()
	_, err := s.Client(s.Admin).PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(Bucket), Key: aws.String(key), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// PutMeta stores data as key with the user metadata meta (names without
// x-amz-meta-) with the admin keys.
func (s *Server) PutMeta(t testing.TB, key string, data []byte, meta map[string]string) {
	t.Helper()
	_, err := s.Client(s.Admin).PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(Bucket), Key: aws.String(key), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		Metadata: meta,
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// Get returns the object, or an error that satisfies IsNotFound.
func (s *Server) Get(t testing.TB, key string) ([]byte, error) {
	out, err := s.Client(s.Admin).GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer func() { _ = out.Body.Close() }()
	return io.ReadAll(out.Body)
}

// MustGet returns the object or fails the test.
func (s *Server) MustGet(t testing.TB, key string) []byte {
	t.Helper()
	data, err := s.Get(t, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return data
}

// AssertAbsent fails the test unless key does not exist.
func (s *Server) AssertAbsent(t testing.TB, key string) {
	t.Helper()
	if _, err := s.Get(t, key); !IsNotFound(err) {
		t.Fatalf("object %s: got err %v, want not found", key, err)
	}
}

// Keys lists every key in the bucket under prefix.
func (s *Server) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	var out []string
	p := s3.NewListObjectsV2Paginator(s.Client(s.Admin), &s3.ListObjectsV2Input{Bucket: aws.String(Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, o := range page.Contents {
			out = append(out, aws.ToString(o.Key))
		}
	}
	return out
}

// IsNotFound reports whether err is S3's "no such key".
func IsNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var api smithy.APIError
	return errors.As(err, &nsk) || errors.As(err, &nf) || (errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound"))
}
