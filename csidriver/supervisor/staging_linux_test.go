//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/fusetest"
)

// TestStagingReserveReachesServers: the supervisor hands the node's
// staging reserve to every FUSE server it starts. On a real 64 MiB tmpfs
// as the state directory with half of it reserved, a writer through a
// real rekey-fuse gets ENOSPC with the reserve still free, and closing
// the file uploads what was accepted.
func TestStagingReserveReachesServers(t *testing.T) {
	e := newMemEnv(t)
	state := filepath.Join(e.dir, "tmpfs.state")
	fusetest.MountTmpfs(t, state, 64)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sup, err := supervisor.New(ctx, supervisor.Config{FuseBinary: e.bin, StateDir: state, Aborter: e.m, Log: testr.New(t),
		StagingReserve: supervisor.StagingReserve{Percent: 50}})
	if err != nil {
		t.Fatal(err)
	}
	info := e.mount(t, sup, "reserve", "write_cache_mb=0")
	f, err := os.Create(filepath.Join(info.Spec.Target, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var n int
	for i := 0; i < 48 && err == nil; i++ {
		var m int
		m, err = f.Write(chunk)
		n += m
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 48 MiB with a staging reserve of half of 64 MiB: %v after %d bytes, want ENOSPC", err, n)
	}
	if free := fusetest.FreeBytes(t, state); free < 31<<20 {
		t.Fatalf("%d bytes free on the staging filesystem, want the reserve of 32 MiB kept", free)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after ENOSPC: %v", err)
	}
	out, err := e.s3.Client(e.k).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	got, err := io.ReadAll(out.Body)
	if err != nil || len(got) != n {
		t.Fatalf("bucket has %d bytes (%v), want the %d accepted", len(got), err, n)
	}
}
