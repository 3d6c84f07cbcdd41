package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr/testr"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/session"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

func needRoot(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and /dev/fuse")
		}
		t.Skip("needs root and /dev/fuse")
	}
}

// setup builds rekey-fuse into a short temporary directory and starts an
// S3 server with bucket "bkt" and keys k.
func setup(t *testing.T) (dir, bin string, k keys.Keys, s3 *fakes3.Server) {
	t.Helper()
	dir, err := os.MkdirTemp("", "rksup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin = filepath.Join(dir, "rekey-fuse")
	if out, err := exec.Command("go", "build", "-o", bin, "rekey.dev/rekey/cmd/rekey-fuse").CombinedOutput(); err != nil {
		t.Fatalf("build rekey-fuse: %v\n%s", err, out)
	}
	k = fakes3.NewKeys("AKSUP")
	s3, err = fakes3.Start(k, "bkt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	return dir, bin, k, s3
}

// object reads key from bucket bkt of s3.
func object(t *testing.T, s3c *fakes3.Server, k keys.Keys, key string) string {
	t.Helper()
	out, err := s3c.Client(k).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return string(b)
}

// serveSocket serves sup's API on a socket in dir until ctx ends, and
// returns a client of it and a channel closed when Serve returned.
func serveSocket(t *testing.T, ctx context.Context, sup *supervisor.Supervisor, dir string) (*supervisor.Client, <-chan struct{}) { //nolint:revive // t first, like every test helper here
	t.Helper()
	sock := filepath.Join(dir, "sup.sock")
	lis, err := supervisor.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = sup.Serve(ctx, lis) }()
	return &supervisor.Client{Path: sock}, served
}

// newTarget makes the mount target of a test and the Config of its
// supervisors; the target is unmounted when the test ends.
func newTarget(t *testing.T, dir, bin string) (mounter.Interface, string, supervisor.Config) {
	t.Helper()
	m := mounter.New()
	target := filepath.Join(dir, "mnt")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Unmount(target) })
	return m, target, supervisor.Config{FuseBinary: bin, StateDir: filepath.Join(dir, "state"), Aborter: m, Log: testr.New(t)}
}

// startOn mounts /dev/fuse at spec.Target and starts a FUSE server for it
// with start (a Supervisor's or a Client's Start); it fills in the
// connection ID.
func startOn(t *testing.T, m mounter.Interface, spec supervisor.Spec, k keys.Keys,
	start func(context.Context, supervisor.Spec, supervisor.Descriptors, keys.Keys) (supervisor.Info, error)) supervisor.Info {
	t.Helper()
	fuse, err := m.MountFUSE(spec.Target, mounter.FUSEOptions{Source: "rekey:" + spec.Bucket, Subtype: "rekey", AllowOther: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fuse.Close() }()
	if spec.ConnectionID, err = m.ConnectionID(spec.Target); err != nil {
		t.Fatal(err)
	}
	info, err := start(context.Background(), spec, supervisor.Descriptors{Fuse: fuse}, k)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return info
}

// TestStartAdoptDie runs a real rekey-fuse through the Supervisor's socket
// API (SCM_RIGHTS hand-off), re-adopts it from a second Supervisor on the
// same state directory, and checks the death of an adopted server is
// reported and aborted.
func TestStartAdoptDie(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3 := setup(t)

	m, target, cfg := newTarget(t, dir, bin)
	ctx := context.Background()

	sctx, stop := context.WithCancel(ctx)
	sup, err := supervisor.New(sctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, served := serveSocket(t, sctx, sup, dir)

	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3.URL, Bucket: "bkt",
		Options: "use_path_request_style"}, k, client.Start)
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatalf("write: %v", err)
	}
	// Idempotent: a second start for the same target returns the same server.
	again, err := sup.Start(ctx, supervisor.Spec{Target: target}, supervisor.Descriptors{}, k)
	if err != nil || again.PID != info.PID {
		t.Fatalf("second start = %+v, %v; want pid %d", again, err, info.PID)
	}

	// The supervisor goes away; a new one adopts the running server.
	stop()
	<-served
	sup2, err := supervisor.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := sup2.Subscribe()
	defer cancel()
	infos, _ := sup2.List(ctx)
	if len(infos) != 1 || !infos[0].Adopted || infos[0].PID != info.PID || infos[0].Dead {
		t.Fatalf("adopted = %+v", infos)
	}
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("read after adoption: %q, %v", b, err)
	}
	// A swap refused by the adopted server (as a sidecar push would be)
	// still becomes an Event, through its WatchEvents stream.
	cc, closer, err := control.Dial(info.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	bad := fakes3.NewKeys("AKBAD")
	resp, err := cc.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: bad.AccessKeyID, SecretAccessKey: bad.SecretAccessKey, Source: "secret"})
	_ = closer.Close()
	if err != nil || resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_REFUSED {
		t.Fatalf("swap with bad keys = %v, %v", resp, err)
	}
	select {
	case ev := <-events:
		if ev.Kind != "refused" || !strings.Contains(ev.Reason, "InvalidAccessKeyId") || ev.Source != "secret" {
			t.Errorf("event = %+v, want refused (InvalidAccessKeyId) from secret", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no refused event from the adopted server")
	}
	// The adopted server dies: the supervisor took copies of its
	// descriptors on adoption and resumes the connection.
	p, _ := os.FindProcess(info.PID)
	_ = p.Kill()
	_, _ = p.Wait() // our child: reap it so the pidfd fires
	select {
	case ev := <-events:
		if ev.Kind != supervisor.EventResumed || ev.Spec.VolumeID != "pv" || !strings.Contains(ev.Reason, "resumed as process") {
			t.Fatalf("event = %+v, want resumed for pv", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no resumed event for the adopted server")
	}
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("read after the resume: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "g"), []byte("after"), 0o644); err != nil {
		t.Fatalf("write after the resume: %v", err)
	}
	if got := object(t, s3, k, "g"); got != "after" {
		t.Fatalf("bucket has %q for g, want %q", got, "after")
	}
	infos, _ = sup2.List(ctx)
	if len(infos) != 1 || infos[0].Resumes != 1 || infos[0].PID == info.PID {
		t.Fatalf("after the resume: %+v", infos)
	}

	// On a kernel without FUSE_NOTIFY_RESEND (masked in the recorded INIT
	// settings) a dead server is not resumed: the connection is aborted at
	// once (no process hangs on a request nobody answers) and reported.
	sessionFile := filepath.Join(cfg.StateDir, info.ID+".session")
	st, err := session.Read(sessionFile)
	if err != nil {
		t.Fatal(err)
	}
	st.Init.Kernel.Flags2 &^= uint32(fuse.CAP_HAS_RESEND >> 32)
	if err := session.Write(sessionFile, st); err != nil {
		t.Fatal(err)
	}
	_ = unix.Kill(infos[0].PID, unix.SIGKILL)
	select {
	case ev := <-events:
		if ev.Kind != supervisor.EventDied || ev.Spec.VolumeID != "pv" || !strings.Contains(ev.Reason, "cannot resend") {
			t.Errorf("event = %+v, want died for pv (cannot resend)", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no died event")
	}
	if _, err := os.ReadDir(target); err == nil {
		t.Error("dead mount still answers")
	}
	if err := sup2.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if mounted, _, _ := m.IsMountPoint(target); mounted {
		t.Error("still mounted after Unmount")
	}
	if left := mountState(cfg.StateDir); len(left) != 0 {
		t.Errorf("state left after Stop: %v", left)
	}
}

// mountState lists what the state directory holds of mounts: everything
// but owners/, the supervisor instances' locks (a running supervisor's
// stays).
func mountState(dir string) []string {
	all, _ := filepath.Glob(filepath.Join(dir, "*"))
	var out []string
	for _, p := range all {
		if filepath.Base(p) != "owners" {
			out = append(out, p)
		}
	}
	return out
}

// TestUnmountedServerExitsQuietly: a mount removed behind the supervisor's
// back (unpublish while it was unreachable) makes the server exit; that is
// not a death: no Event, no state left.
func TestUnmountedServerExitsQuietly(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3 := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	ctx := context.Background()
	sup, err := supervisor.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := sup.Subscribe()
	defer cancel()
	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3.URL, Bucket: "bkt",
		Options: "use_path_request_style"}, k, sup.Start)
	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if in, _ := sup.List(ctx); len(in) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server still listed after its mount was removed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case ev := <-events:
		t.Errorf("unexpected event %+v", ev)
	default:
	}
	if left := mountState(cfg.StateDir); len(left) != 0 {
		t.Errorf("state left: %v", left)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(info.PID)); err == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/stat"); !strings.Contains(string(b), ") Z ") {
			t.Errorf("server %d still running", info.PID)
		}
	}
}

// TestReportWhileNoSupervisor: a sidecar Report sent while no supervisor
// runs becomes an Event once a new supervisor adopts the server — exactly
// once: events the previous supervisor delivered are not repeated, and a
// third supervisor finds nothing new.
func TestReportWhileNoSupervisor(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3 := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	ctx := context.Background()

	ctx1, stop1 := context.WithCancel(ctx)
	sup1, err := supervisor.New(ctx1, cfg)
	if err != nil {
		t.Fatal(err)
	}
	events1, cancel1 := sup1.Subscribe()
	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3.URL, Bucket: "bkt",
		Options: "use_path_request_style"}, k, sup1.Start)
	t.Cleanup(func() {
		p, _ := os.FindProcess(info.PID)
		_ = p.Kill()
		_, _ = p.Wait()
	})
	report := func(reason string) {
		t.Helper()
		c, closer, err := control.Dial(info.ControlSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = closer.Close() }()
		if _, err := c.Report(ctx, &credentialsv1.ReportRequest{VolumeId: "pv", Source: "rrsa", Reason: reason}); err != nil {
			t.Fatalf("report: %v", err)
		}
	}
	expect := func(events <-chan supervisor.Event, reasons ...string) {
		t.Helper()
		for _, want := range reasons {
			select {
			case ev := <-events:
				if ev.Kind != "reported" || ev.Reason != want || ev.Spec.VolumeID != "pv" || ev.Source != "rrsa" {
					t.Fatalf("event = %+v, want reported %q", ev, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no event %q", want)
			}
		}
		select { // and nothing more
		case ev := <-events:
			t.Fatalf("unexpected event %+v", ev)
		case <-time.After(time.Second):
		}
	}
	report("STS refused the token (1)")
	expect(events1, "STS refused the token (1)")

	// The supervisor goes away; the sidecar reports in the meantime.
	cancel1()
	stop1()
	time.Sleep(200 * time.Millisecond) // let sup1's followers see the end
	report("STS refused the token (2)")
	report("STS refused the token (3)")

	ctx2, stop2 := context.WithCancel(ctx)
	sup2, err := supervisor.New(ctx2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the reports arrive before anyone subscribes
	events2, cancel2 := sup2.Subscribe()
	expect(events2, "STS refused the token (2)", "STS refused the token (3)")
	report("STS refused the token (4)") // live, on the adopted server
	expect(events2, "STS refused the token (4)")
	cancel2()
	stop2()
	time.Sleep(200 * time.Millisecond)

	sup3, err := supervisor.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	events3, cancel3 := sup3.Subscribe()
	defer cancel3()
	expect(events3) // everything was delivered before
	if err := sup3.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
}

// TestPodSocketOnTmpfs: the pod's rekey-sockets emptyDir appears only after
// the server started, on another filesystem (medium: Memory, tmpfs), at a
// path longer than sun_path. The server creates its own socket there (mode
// 0600, owned by the sidecar's UID), reachable and serving the same
// volume; Stop removes it.
func TestPodSocketOnTmpfs(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3 := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	const sidecarUID = 65532
	podDir := filepath.Join(dir, "kubelet", "pods", "0d9c6e8a-5f7b-4c1e-9a43-2b8d7e6f1a90", "volumes",
		"kubernetes.io~empty-dir", "rekey-sockets")
	podSocket := filepath.Join(podDir, supervisor.MountID(target)+".sock")
	if len(podSocket) < 108 {
		t.Fatalf("pod socket path %d bytes, want one over the sun_path limit", len(podSocket))
	}
	ctx := context.Background()
	sup, err := supervisor.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := sup.Subscribe()
	defer cancel()
	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3.URL, Bucket: "bkt",
		Options: "use_path_request_style", PodSocket: podSocket, SocketUID: sidecarUID}, k, sup.Start) // no pod directory yet
	t.Cleanup(func() { _ = sup.Stop(ctx, info.ID) })

	// kubelet sets up the emptyDir later, on tmpfs.
	time.Sleep(300 * time.Millisecond)
	if err := os.MkdirAll(podDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", podDir, "tmpfs", 0, "size=1m,mode=0777"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(podDir, unix.MNT_DETACH) })
	var st unix.Stat_t
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if unix.Lstat(podSocket, &st) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no socket in the pod directory")
		}
	}
	var ctl unix.Stat_t
	if err := unix.Stat(info.ControlSocket, &ctl); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o777 != 0o600 || st.Uid != sidecarUID || st.Dev == ctl.Dev {
		t.Errorf("pod socket mode %o uid %d dev %d (control socket dev %d); want a 0600 socket of uid %d on the tmpfs",
			st.Mode, st.Uid, st.Dev, ctl.Dev, sidecarUID)
	}
	if left, _ := filepath.Glob(filepath.Join(podDir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left in the pod directory: %v", left)
	}

	// Reach it through a short name, as the sidecar does in its pod: as
	// the sidecar's UID it serves; as root (any root container of the
	// pod) it does not.
	dfd, err := unix.Open(podDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(dfd) }()
	if got := statusAs(t, sidecarUID, sidecarUID, dfd, filepath.Base(podSocket), "pv"); got != "pv" {
		t.Fatalf("status through the pod socket as the sidecar = %q, want volume pv", got)
	}
	root, err := control.NewClient(fmt.Sprintf("/proc/self/fd/%d/%s", dfd, filepath.Base(podSocket)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	if _, err := root.Status(ctx); err == nil || !control.Retryable(err) {
		t.Errorf("status through the pod socket as root = %v, want the connection refused", err)
	}
	select {
	case ev := <-events:
		if ev.Kind != "reported" || ev.Reason != "via the pod socket" {
			t.Errorf("event = %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for a report through the pod socket")
	}

	// The pod turns out to run in a user namespace (hostUsers: false):
	// kubelet records the mappings when it creates the sandbox, and the
	// sidecar's UID 65532 is host UID 265532. The server gives the socket
	// to that UID and serves it.
	const hostBase = 200000
	usernsFile := filepath.Join(dir, "kubelet", "pods", "0d9c6e8a-5f7b-4c1e-9a43-2b8d7e6f1a90", "userns")
	mapping := fmt.Sprintf(`{"uidMappings":[{"hostId":%d,"containerId":0,"length":65536}],"gidMappings":[{"hostId":%d,"containerId":0,"length":65536}]}`, hostBase, hostBase)
	if err := os.WriteFile(usernsFile, []byte(mapping), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if unix.Lstat(podSocket, &st) == nil && st.Uid == hostBase+sidecarUID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod socket uid %d, want %d after the user namespace appeared", st.Uid, hostBase+sidecarUID)
		}
	}
	if st.Mode&0o777 != 0o600 || st.Gid != hostBase+sidecarUID {
		t.Errorf("pod socket mode %o gid %d, want 0600 and %d", st.Mode&0o777, st.Gid, hostBase+sidecarUID)
	}
	if got := statusAs(t, hostBase+sidecarUID, hostBase+sidecarUID, dfd, filepath.Base(podSocket), "pv"); got != "pv" {
		t.Fatalf("status as the sidecar in a user namespace = %q, want volume pv", got)
	}

	if err := sup.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(podSocket); err == nil {
		t.Error("pod socket left after Stop")
	}
}

// TestDescriptorsOverSocket: a driver that restarted takes copies of a
// mount's descriptors back from the supervisor (descriptors), and a
// supervisor that has them ignores the driver's attach.
func TestDescriptorsOverSocket(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3 := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sup, err := supervisor.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := serveSocket(t, ctx, sup, dir)
	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3.URL, Bucket: "bkt",
		Options: "use_path_request_style"}, k, client.Start)
	t.Cleanup(func() { _ = sup.Stop(context.Background(), info.ID) })

	fds, err := client.Descriptors(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer fds.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(fds.Fuse.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 10 || unix.Minor(st.Rdev) != 229 {
		t.Fatalf("first descriptor is not /dev/fuse: %+v, %v", st, err)
	}
	if link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fds.Custody.Fd())); err != nil || !strings.HasPrefix(link, "/memfd:") {
		t.Fatalf("second descriptor is %q (%v), want the key custody memfd", link, err)
	}
	if err := client.Attach(ctx, info.ID, fds); err != nil {
		t.Fatalf("attach to a mount that has its descriptors: %v", err)
	}
	if _, err := client.Descriptors(ctx, "no-such-mount"); err == nil || !strings.Contains(err.Error(), "no such mount") {
		t.Fatalf("descriptors of an unknown mount: %v", err)
	}
	// The mount still serves on the descriptors.
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}
