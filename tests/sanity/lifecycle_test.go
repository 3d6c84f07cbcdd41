package sanity

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/csiproc"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// proc is a rekey-csi process of the harness.
type proc = csiproc.Proc

// mustStart fails the test on err, else kills p at the end of the test.
func mustStart(t *testing.T, p *proc, err error) *proc {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLifecycle drives the driver and the supervisor, as separate
// processes, over gRPC the way kubelet does, and kills each of them.
func TestLifecycle(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	dir := shortTempDir(t)
	supSock := filepath.Join(dir, "sup.sock")
	csiSock := filepath.Join(dir, "csi.sock")
	kubelet := filepath.Join(dir, "kubelet")
	supLog, drvLog := filepath.Join(dir, "supervisor.log"), filepath.Join(dir, "driver.log")
	defer func() {
		if t.Failed() {
			for _, p := range []string{supLog, drvLog} {
				b, _ := os.ReadFile(p)
				t.Logf("==== %s\n%s", p, b)
			}
		}
	}()
	n := &csiproc.Node{Binary: filepath.Join(binDir, "rekey-csi"), FuseBinary: filepath.Join(binDir, "rekey-fuse"),
		Dir: dir, KubeletRoot: kubelet, SupervisorLog: supLog, DriverLog: drvLog,
		SupervisorFlags: []string{"-v=1"}, DriverFlags: []string{"-v=2"}}
	startSupervisor := func() *proc {
		p, err := n.StartSupervisor(context.Background())
		return mustStart(t, p, err)
	}
	startDriver := func() (*proc, csi.NodeClient) {
		p, err := n.StartDriver(context.Background())
		return mustStart(t, p, err), nodeClient(t, csiSock)
	}
	sup := startSupervisor()
	drv, node := startDriver()
	ctx := context.Background()

	podUID := "0b7c5a8e-1111-4222-8333-944455556666"
	target := filepath.Join(kubelet, "pods", podUID, "volumes", "kubernetes.io~csi", "pv-a", "mount")
	vctx := e.volumeContext()
	vctx["csi.storage.k8s.io/pod.name"], vctx["csi.storage.k8s.io/pod.namespace"], vctx["csi.storage.k8s.io/pod.uid"] = "app", "default", podUID
	publish := func(c csi.NodeClient, target string, k keys.Keys) error {
		_, err := c.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pv-a", TargetPath: target,
			VolumeCapability: mountCapability(), VolumeContext: vctx, Secrets: secretsOf(k)})
		return err
	}
	want := map[string][]byte{}
	write := func(name string) {
		t.Helper()
		data := make([]byte, 256<<10)
		_, _ = rand.Read(data)
		if err := os.WriteFile(filepath.Join(target, name), data, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %s: %v", name, err)
		}
		want[name] = data
	}
	statusErr := func(sock string) error {
		t.Helper()
		d, err := os.Open(filepath.Dir(sock))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		c, err := control.NewClient(fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(sock)))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		_, err = c.Status(ctx)
		return err
	}
	statusFingerprint := func(sock string) string {
		t.Helper()
		// The node path exceeds sun_path; dial through the directory's fd,
		// as the sidecar's short /run/rekey path would.
		d, err := os.Open(filepath.Dir(sock))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		c, closer, err := control.Dial(fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(sock)))
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		st, err := c.Status(ctx, &credentialsv1.StatusRequest{})
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return st.GetFingerprint()
	}

	// Publish; the pod's socket dir appears afterwards, as with kubelet.
	start := time.Now()
	if err := publish(node, target, e.keys); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Logf("publish took %s", time.Since(start))
	sockDir := filepath.Join(kubelet, "pods", podUID, "volumes", "kubernetes.io~empty-dir", "rekey-sockets")
	if err := os.MkdirAll(sockDir, 0o777); err != nil {
		t.Fatal(err)
	}
	podSock := filepath.Join(sockDir, supervisor.MountID(target)+".sock")
	waitFor(t, "control socket in the pod's emptyDir", 5*time.Second, func() bool { _, err := os.Stat(podSock); return err == nil })
	if fi, _ := os.Stat(podSock); fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 65532 {
		t.Errorf("pod socket mode %v uid %d, want 0600 owned by 65532", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	// The pod socket serves the sidecar's UID alone: this test runs as
	// root, as a root container of the pod would, and is turned away. It
	// reads the server through the supervisor's private socket instead.
	if err := statusErr(podSock); err == nil || !control.Retryable(err) {
		t.Errorf("status via the pod socket as root = %v, want the connection refused", err)
	}
	privSock := filepath.Join(n.StateDir(), supervisor.MountID(target)+".sock")
	if fp := statusFingerprint(privSock); fp != e.keys.Fingerprint() {
		t.Errorf("fingerprint via the control socket = %q, want %q", fp, e.keys.Fingerprint())
	}
	write("a")
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	if ra, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))); err != nil || strings.TrimSpace(string(ra)) != "1024" {
		t.Errorf("kernel read-ahead of the published mount = %q (%v), want 1024 KiB", ra, err)
	}

	// Republish with new keys swaps them; the old keys are revoked right after.
	k2 := fakes3.NewKeys("AKSECOND")
	e.s3.AddKeys(k2)
	if err := publish(node, target, k2); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if fp := statusFingerprint(privSock); fp != k2.Fingerprint() {
		t.Fatalf("after republish fingerprint = %q, want %q", fp, k2.Fingerprint())
	}
	e.s3.RevokeKeys(e.keys)
	write("b")

	// SIGKILL the supervisor: I/O continues; a new one adopts the server.
	sup.Kill()
	write("c")
	sup = startSupervisor()
	infos, err := (&supervisor.Client{Path: supSock}).List(ctx)
	if err != nil || len(infos) != 1 || !infos[0].Adopted || infos[0].Dead {
		t.Fatalf("after supervisor restart: %+v, %v", infos, err)
	}

	// SIGKILL the driver: I/O continues; a new driver republishes and swaps.
	drv.Kill()
	write("d")
	drv, node = startDriver()
	k3 := fakes3.NewKeys("AKTHIRD")
	e.s3.AddKeys(k3)
	if err := publish(node, target, k3); err != nil {
		t.Fatalf("republish after driver restart: %v", err)
	}
	if fp := statusFingerprint(privSock); fp != k3.Fingerprint() {
		t.Fatalf("after second republish fingerprint = %q, want %q", fp, k3.Fingerprint())
	}
	e.s3.RevokeKeys(k2)
	write("e")

	// A republish with keys S3 refuses keeps the mount and returns no error.
	if err := publish(node, target, fakes3.NewKeys("AKBOGUS")); err != nil {
		t.Fatalf("republish with bad keys returned %v, want success (and an Event)", err)
	}
	write("f")
	waitFor(t, "CredentialRefreshFailed event in the driver log", 10*time.Second, func() bool {
		b, _ := os.ReadFile(drvLog)
		return bytes.Contains(b, []byte("CredentialRefreshFailed"))
	})

	// Unpublish: flushed, unmounted, socket and target gone; bytes are in the bucket.
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-a", TargetPath: target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target still exists after unpublish: %v", err)
	}
	if _, err := os.Lstat(podSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod socket still exists after unpublish: %v", err)
	}
	cl := e.s3.Client(k3)
	for name, data := range want {
		out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(name)})
		if err != nil {
			t.Fatalf("object %s: %v", name, err)
		}
		got, _ := io.ReadAll(out.Body)
		_ = out.Body.Close()
		if !bytes.Equal(got, data) {
			t.Errorf("object %s: %d bytes differ from the %d written", name, len(got), len(data))
		}
	}

	// A FUSE server killed while mounted: the supervisor resumes it on its
	// live connection; a file open across the kill keeps working and the
	// application sees no error.
	target2 := filepath.Join(kubelet, "pods", podUID, "volumes", "kubernetes.io~csi", "pv-b", "mount")
	if err := publish(node, target2, k3); err != nil {
		t.Fatalf("publish second volume: %v", err)
	}
	serverPID := func() int {
		t.Helper()
		infos, err := (&supervisor.Client{Path: supSock}).List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			if in.Spec.Target == target2 && !in.Dead {
				return in.PID
			}
		}
		return 0
	}
	held, err := os.OpenFile(filepath.Join(target2, "held"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var heldData []byte
	heldWrite := func() {
		t.Helper()
		chunk := make([]byte, 64<<10)
		_, _ = rand.Read(chunk)
		if _, err := held.Write(chunk); err != nil {
			t.Fatalf("write to a file open across the kill: %v", err)
		}
		heldData = append(heldData, chunk...)
	}
	heldWrite()
	pid := serverPID()
	if pid == 0 {
		t.Fatal("second volume not in the supervisor")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if _, err := os.ReadDir(target2); err != nil {
		t.Fatalf("listing after the kill: %v", err)
	}
	t.Logf("first request after the FUSE server was killed answered after %s", time.Since(killed))
	heldWrite()
	waitFor(t, "FUSEServerResumed event in the driver log", 10*time.Second, func() bool {
		b, _ := os.ReadFile(drvLog)
		return bytes.Contains(b, []byte("FUSEServerResumed"))
	})

	if err := held.Close(); err != nil {
		t.Fatalf("close of a file open across the kill: %v", err)
	}

	// The supervisor's container dies (OOM, or stopped): the supervisor and
	// every FUSE server at once. The driver's copies of the descriptors keep
	// the connections; the new supervisor gets them back and resumes them.
	// An application process keeps a file open across it. (Not this test
	// process: its exec of the new supervisor would close that file, a FLUSH
	// no server can answer yet, before the supervisor runs.)
	app := exec.Command("sh", "-c", `exec 3>>"$1" && echo open && read -r line && printf '%s' "$line" >&3 && exec 3>&- && echo closed`, "app",
		filepath.Join(target2, "held"))
	appIn, err := app.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	appOut, err := app.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Process.Kill(); _ = app.Wait() }()
	appLines := bufio.NewScanner(appOut)
	if !appLines.Scan() || appLines.Text() != "open" {
		t.Fatalf("the application process did not open the file: %q", appLines.Text())
	}
	oldPID := serverPID()
	sup.Kill()
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { // waits in the kernel until a server takes the connection over
		_, err := os.ReadDir(target2)
		blocked <- err
	}()
	sup = startSupervisor()
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatalf("listing across the supervisor container's death: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("a listing still waits a minute and a half after the supervisor came back")
	}
	waitFor(t, "the mount resumed by the new supervisor", 90*time.Second, func() bool {
		infos, err := (&supervisor.Client{Path: supSock}).List(ctx)
		return err == nil && len(infos) == 1 && !infos[0].Dead && infos[0].Resumes > 0
	})
	tail := "written through a descriptor opened before the supervisor's container died"
	if _, err := fmt.Fprintln(appIn, tail); err != nil {
		t.Fatal(err)
	}
	if !appLines.Scan() || appLines.Text() != "closed" {
		t.Fatalf("the application process failed to write and close: %q", appLines.Text())
	}
	heldData = append(heldData, tail...)
	if got, err := os.ReadFile(filepath.Join(target2, "held")); err != nil || !bytes.Equal(got, heldData) {
		t.Fatalf("read back the held file: %d bytes, %v; want %d", len(got), err, len(heldData))
	}
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-b", TargetPath: target2}); err != nil {
		t.Fatalf("unpublish of the second mount: %v", err)
	}
	out, err := e.s3.Client(k3).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("held")})
	if err != nil {
		t.Fatalf("object held: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	_ = out.Body.Close()
	if !bytes.Equal(got, heldData) {
		t.Errorf("object held: %d bytes, want the %d written across the kills", len(got), len(heldData))
	}
	mps, _ := mount.ParseMountInfo("/proc/self/mountinfo")
	for _, m := range mps {
		if strings.HasPrefix(m.MountPoint, dir) {
			t.Errorf("stale mount left: %s", m.MountPoint)
		}
	}
	_ = drv
	_ = sup
}
