package s3fs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"rekey.dev/rekey/fuseserver/journal"
	"rekey.dev/rekey/internal/fusetest"
)

// opErr wraps err the way the SDK returns errors from an operation.
func opErr(status int, err error) error {
	return &smithy.OperationError{
		ServiceID:     "S3",
		OperationName: "GetObject",
		Err: &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      err,
			},
			RequestID: "req",
		},
	}
}

func apiErr(code string) error { return &smithy.GenericAPIError{Code: code, Message: "msg"} }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrno(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"NoSuchKey typed", opErr(404, &types.NoSuchKey{}), syscall.ENOENT},
		{"NotFound from HEAD", opErr(404, &types.NotFound{}), syscall.ENOENT},
		{"bare 404", opErr(404, errors.New("x")), syscall.ENOENT},
		{"AccessDenied", opErr(403, apiErr("AccessDenied")), syscall.EACCES},
		{"InvalidAccessKeyId", opErr(403, apiErr("InvalidAccessKeyId")), syscall.EACCES},
		{"SignatureDoesNotMatch", opErr(403, apiErr("SignatureDoesNotMatch")), syscall.EACCES},
		{"ExpiredToken", opErr(400, apiErr("ExpiredToken")), syscall.EACCES},
		{"bare 403 from HEAD", opErr(403, apiErr("Forbidden")), syscall.EACCES},
		{"403 unknown code", opErr(403, apiErr("Whatever")), syscall.EACCES},
		{"NoSuchBucket", opErr(404, apiErr("NoSuchBucket")), syscall.EIO},
		{"500", opErr(500, apiErr("InternalError")), syscall.EIO},
		{"503 SlowDown", opErr(503, apiErr("SlowDown")), syscall.EIO},
		{"S3 RequestTimeout", opErr(400, apiErr("RequestTimeout")), syscall.ETIMEDOUT},
		{"EntityTooLarge", opErr(400, apiErr("EntityTooLarge")), syscall.EFBIG},
		{"deadline", fmt.Errorf("put: %w", &smithy.OperationError{Err: context.DeadlineExceeded}), syscall.ETIMEDOUT},
		{"canceled", fmt.Errorf("put: %w", context.Canceled), syscall.EINTR},
		{"net timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, syscall.ETIMEDOUT},
		{"connection refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, syscall.EIO},
		{"staging disk full", fmt.Errorf("write: %w", &os.PathError{Op: "write", Err: syscall.ENOSPC}), syscall.ENOSPC},
		{"unknown", errors.New("boom"), syscall.EIO},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Errno(tc.err); got != tc.want {
				t.Fatalf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestKeyRevoked: with the FS key revoked, reads fail with EACCES and a
// close fails with EACCES without losing the data; once the key is accepted
// again the data lands, through fsync on a fresh handle or the background
// retry.
func TestKeyRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	e.put("existing.txt", []byte("old"))
	// Look the new names up while the key works: with the key revoked the
	// lookup before create would fail with EACCES already.
	for _, name := range []string{"by-fsync.txt", "by-retry.txt"} {
		if _, err := os.Stat(e.path(name)); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("stat %s: %v", name, err)
		}
	}
	e.srv.RevokeKeys(e.fsKeys)

	if _, err := os.ReadFile(e.path("existing.txt")); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("read with revoked key: %v, want EACCES", err)
	}
	for _, name := range []string{"by-fsync.txt", "by-retry.txt"} {
		fusetest.WriteCloseFails(t, e.path(name), []byte("precious "+name), syscall.EACCES) // the key is revoked
		e.assertAbsent(name)
	}
	if got := e.fsys.Pending(); len(got) != 2 {
		t.Fatalf("Pending = %v, want both files", got)
	}
	if err := e.fsys.FlushAll(t.Context()); !errors.Is(err, ErrNotUploaded) {
		t.Fatalf("FlushAll with revoked key: %v, want ErrNotUploaded", err)
	}
	// The staged data is on disk, private to the server, and its journal
	// says which objects it belongs to and that they are not uploaded.
	entries, _, err := journal.Scan(e.fsys.opts.StagingDir)
	if err != nil || len(entries) != 2 {
		t.Fatalf("staging dir: %v, %v; want 2 files", entries, err)
	}
	for _, ent := range entries {
		if !ent.HasData || ent.Err != nil || ent.Record.State != journal.StateDirty || !strings.HasPrefix(ent.Record.Key, "by-") {
			t.Fatalf("journal entry %+v, want a dirty record of a by-* file", ent)
		}
	}
	staged, err := os.ReadDir(e.fsys.opts.StagingDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{e.fsys.opts.StagingDir, e.fsys.opts.StagingDir + "/" + staged[0].Name()} {
		fi, err := os.Stat(dir)
		if err != nil || (fi.IsDir() && fi.Mode().Perm() != 0o700) || (!fi.IsDir() && fi.Mode().Perm() != 0o600) {
			t.Fatalf("staging permissions: %v %v", fi, err)
		}
	}
	// The staged files are still readable through the mount.
	if got, err := os.ReadFile(e.path("by-fsync.txt")); err != nil || string(got) != "precious by-fsync.txt" {
		t.Fatalf("read staged file: %q, %v", got, err)
	}

	e.srv.AddKeys(e.fsKeys)
	f, err := os.OpenFile(e.path("by-fsync.txt"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the key is back: %v", err)
	}
	if got := e.mustGet("by-fsync.txt"); string(got) != "precious by-fsync.txt" {
		t.Fatalf("bucket after fsync: %q", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "background upload", func() bool {
		got, err := e.get("by-retry.txt")
		return err == nil && string(got) == "precious by-retry.txt"
	})
	eventually(t, 5*time.Second, "nothing pending", func() bool { return len(e.fsys.Pending()) == 0 })
	if err := e.fsys.FlushAll(t.Context()); err != nil {
		t.Fatalf("FlushAll: %v", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	e.put("f", []byte("f"))
	e.put("f2", []byte("f2"))
	tests := []struct {
		name string
		op   func() error
		want syscall.Errno
	}{
		{"missing file", func() error { _, err := os.ReadFile(e.path("nope")); return err }, syscall.ENOENT},
		{"missing dir", func() error { _, err := os.ReadDir(e.path("nodir")); return err }, syscall.ENOENT},
		{"hard link", func() error { return os.Link(e.path("f"), e.path("g")) }, syscall.ENOTSUP},
		{"rename exchange", func() error {
			return renameat2(e.path("f"), e.path("f2"), 2 /* RENAME_EXCHANGE */)
		}, syscall.EINVAL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	// "kernel": the mount is MS_RDONLY, as Mount does it. "server": the same
	// options without MS_RDONLY, so that the FS's own checks answer.
	for _, mode := range []string{"kernel", "server"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{ReadOnly: true}, mode == "kernel")
			if mode == "server" {
				e.dir = t.TempDir()
				opts := e.fsys.MountOptions(false)
				opts.DirectMountFlags = 0
				srv, err := mountWith(e.dir, e.fsys, opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unmount(t, srv) })
			}
			e.put("f", []byte("content"))
			e.put("d/x", []byte("x"))
			if got, err := os.ReadFile(e.path("f")); err != nil || string(got) != "content" {
				t.Fatalf("read: %q %v", got, err)
			}
			tests := []struct {
				name string
				op   func() error
			}{
				{"create", func() error { return os.WriteFile(e.path("new"), []byte("x"), 0o644) }},
				{"open for write", func() error {
					f, err := os.OpenFile(e.path("f"), os.O_WRONLY, 0)
					if err == nil {
						f.Close()
					}
					return err
				}},
				{"truncate", func() error { return os.Truncate(e.path("f"), 1) }},
				{"unlink", func() error { return os.Remove(e.path("f")) }},
				{"mkdir", func() error { return os.Mkdir(e.path("nd"), 0o755) }},
				{"rmdir", func() error { return os.Remove(e.path("d")) }},
				{"rename", func() error { return os.Rename(e.path("f"), e.path("g")) }},
				{"chmod", func() error { return os.Chmod(e.path("f"), 0o600) }},
			}
			for _, tc := range tests {
				if err := tc.op(); !errors.Is(err, syscall.EROFS) {
					t.Errorf("%s: got %v, want EROFS", tc.name, err)
				}
			}
			if got := e.mustGet("f"); string(got) != "content" {
				t.Fatalf("object changed: %q", got)
			}
		})
	}
}
