package sanity

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/container-storage-interface/spec/lib/go/csi"

	"rekey.dev/rekey/internal/csiproc"
)

// TestInitStopUploads stops the supervisor container the way the kubelet
// does (SIGTERM to init) while an application holds a file with data that
// is not uploaded: init stops the supervisor, then the FUSE server, which
// uploads the data before it exits.
func TestInitStopUploads(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	dir := shortTempDir(t)
	csiSock := filepath.Join(dir, "csi.sock")
	logPath := filepath.Join(dir, "log")
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("log:\n%s", b)
		}
	}()
	n := &csiproc.Node{Binary: filepath.Join(binDir, "rekey-csi"), FuseBinary: filepath.Join(binDir, "rekey-fuse"), Dir: dir, NodeID: "n",
		UnderInit: true, InitFlags: []string{"-v=1", "--server-stop-grace=20s"}, SupervisorLog: logPath, DriverLog: logPath}
	p, err := n.StartSupervisor(context.Background())
	init := mustStart(t, p, err)
	p, err = n.StartDriver(context.Background())
	mustStart(t, p, err)
	node := nodeClient(t, csiSock)
	target := filepath.Join(dir, "mnt")
	ctx := context.Background()
	if _, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pv", TargetPath: target,
		VolumeCapability: mountCapability(), VolumeContext: e.volumeContext(), Secrets: secretsOf(e.keys)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })

	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	f, err := os.Create(filepath.Join(target, "open.bin"))
	if err != nil {
		t.Fatal(err)
	}
	fd := f.Fd()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	c := e.s3.Client(e.keys)
	get := func() ([]byte, error) {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("open.bin")})
		if err != nil {
			return nil, err
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}
	if got, err := get(); err == nil && len(got) == len(data) {
		t.Fatal("the open file was uploaded before the stop: the test proves nothing")
	}

	start := time.Now()
	if err := init.Stop(30 * time.Second); err != nil {
		t.Fatalf("init did not stop: %v", err)
	}
	t.Logf("init stopped in %s", time.Since(start))
	got, err := get()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the container stopped: object %d bytes, %v; want the %d bytes the application wrote", len(got), err, len(data))
	}

	// The container starts again: the driver still holds the connection's
	// descriptors, the new supervisor gets them and resumes the mount, and
	// the application's file, open all along, closes without an error.
	// The close waits in the kernel (FLUSH) until then. It is issued before
	// the new init is started, and the start waits until the descriptor has
	// left this process's table: the exec would close it again otherwise, a
	// FLUSH nobody can answer before the supervisor runs (see forksafe).
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	fdPath := fmt.Sprintf("/proc/self/fd/%d", fd)
	waitFor(t, "the file's descriptor to leave the table", 10*time.Second, func() bool {
		_, err := os.Readlink(fdPath)
		return err != nil
	})
	p, err = n.StartSupervisor(context.Background())
	mustStart(t, p, err)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close of a file open across the container's stop and start: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("close still waits a minute and a half after the container started again")
	}
	if got, err := get(); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the restart: object %d bytes, %v", len(got), err)
	}
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv", TargetPath: target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
}
