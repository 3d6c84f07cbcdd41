package supervisor_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
)

// generation is one node pod's supervisor container: `rekey-csi init`
// running `rekey-csi supervisor`, a separate process tree of a given
// version, as kubelet would run it.
type generation struct {
	version string
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *fusetest.LockedBuffer // its log, also on our stderr
}

// supervisorPID returns the PID of the supervisor process init runs.
func (g *generation) supervisorPID(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	ppid := fmt.Sprintf("PPid:\t%d\n", g.cmd.Process.Pid)
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(st, []byte(ppid)) && bytes.Contains(cmdline, []byte("\x00supervisor\x00")) {
			return pid
		}
	}
	t.Fatalf("generation %s: no supervisor process", g.version)
	return 0
}

// awaitLog waits until the generation logged s.
func (g *generation) awaitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(g.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("generation %s did not log %q within %s", g.version, s, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildCSI builds rekey-csi with the version string v.
func buildCSI(t *testing.T, dir, v string) string {
	t.Helper()
	bin := filepath.Join(dir, "rekey-csi-"+v)
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", bin, "rekey.dev/rekey/cmd/rekey-csi").CombinedOutput()
	if err != nil {
		t.Fatalf("build rekey-csi %s: %v\n%s", v, err, out)
	}
	return bin
}

func startGeneration(t *testing.T, csi, version, sock, stateDir, fuseBin string) *generation {
	t.Helper()
	cmd := exec.Command(csi, "init", "--instance-state-dir="+stateDir, "--server-stop-grace=30s", "--",
		csi, "supervisor", "--supervisor-socket="+sock, "--state-dir="+stateDir, "--fuse-binary="+fuseBin,
		"--server-memory-mib=0", "--ready-file="+filepath.Join(filepath.Dir(sock), "ready-"+version))
	out := &fusetest.LockedBuffer{All: true}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(os.Stderr, out), io.MultiWriter(os.Stderr, out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &generation{version: version, cmd: cmd, exited: make(chan struct{}), out: out}
	go func() { _ = cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() { g.stop(t) })
	return g
}

// stop ends the generation as kubelet ends a deleted pod's container:
// SIGTERM to init, which stops its supervisor and whatever servers it
// still runs.
func (g *generation) stop(t *testing.T) {
	t.Helper()
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(90 * time.Second):
		t.Errorf("generation %s did not stop", g.version)
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	if st := g.cmd.ProcessState; st != nil && !st.Success() {
		t.Errorf("generation %s exited with %v", g.version, st)
	}
}

// awaitVersion waits until the node socket answers with mount id served
// by version v, and returns how long that took.
func awaitVersion(t *testing.T, c *supervisor.Client, id, v string, timeout time.Duration) (supervisor.Info, time.Duration) {
	t.Helper()
	began := time.Now()
	for time.Since(began) < timeout {
		infos, err := c.List(context.Background())
		if err == nil {
			for _, in := range infos {
				if in.ID == id && in.Version == v && !in.Dead {
					return in, time.Since(began)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	infos, err := c.List(context.Background())
	t.Fatalf("mount %s not served by version %s after %s: %+v, %v", id, v, timeout, infos, err)
	return supervisor.Info{}, 0
}

// TestHandoffUnderLoad is an upgrade and a rollback of the node plugin
// with live mounts: a supervisor container of version vA runs the mount
// while seven application workers use it; a container of version vB
// starts next to it (a DaemonSet rolling update with maxSurge) and takes
// the mount over; the vA container is stopped; then a vA container takes
// the mount back the same way and vB is stopped. No worker may see an
// error, and every byte written is checked in the bucket.
func TestHandoffUnderLoad(t *testing.T) {
	n := newNodeWithTwoVersions(t)
	dir, bin, k, s3srv, csiA, csiB, m, target, cfg, sock, client := n.dir, n.bin, n.k, n.s3, n.csiA, n.csiB, n.m, n.target, n.cfg, n.sock, n.client

	cl := s3srv.Client(k)
	for key, b := range map[string][]byte{"ro/big": content(seedRoBig, roBigSize), "ro/mm": content(seedMmap, roMmapSize)} {
		if _, err := cl.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(key), Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range listEntries {
		if _, err := cl.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(fmt.Sprintf("list/e-%03d", i)),
			Body: bytes.NewReader([]byte{byte(i)})}); err != nil {
			t.Fatal(err)
		}
	}

	genA := startGeneration(t, csiA, "vA", sock, cfg.StateDir, bin)
	eventuallyAnswers(t, client)
	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3srv.URL, Bucket: "bkt",
		Options: "use_path_request_style,multipart_threshold=8,multipart_size=5"}, k, client.Start)
	if info.Version != "vA" || info.Owner == "" {
		t.Fatalf("started: %+v, want version vA with an owner", info)
	}
	w := startWorkers(t, target, m.AbortConnection, info.Spec.ConnectionID)
	w.awaitProgress(t, 2*time.Minute, map[string]int64{"seqwrite": 13})

	var took []time.Duration
	step := func(from *generation, csi, to string) *generation {
		t.Helper()
		g := startGeneration(t, csi, to, sock, cfg.StateDir, bin)
		in, d := awaitVersion(t, client, info.ID, to, 2*time.Minute)
		took = append(took, d)
		t.Logf("%s → %s: mount served by %s (process %d, %d hand-offs) %v after the new container started",
			from.version, to, in.Version, in.PID, in.HandOffs, d.Round(time.Millisecond))
		if _, err := os.Stat(filepath.Join(dir, "ready-"+to)); err != nil {
			t.Errorf("the %s supervisor serves but wrote no ready file: %v", to, err)
		}
		w.awaitProgress(t, 2*time.Minute, map[string]int64{"seqwrite": 5}) // both containers run
		// The old container's supervisor process restarts (a crash, an
		// OOM): its init starts it again, and it must leave the mount and
		// the node's socket to the newer one.
		served := pidOf(t, client, info.ID)
		if err := syscall.Kill(from.supervisorPID(t), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		from.awaitLog(t, "superseded by a newer node pod's supervisor", 30*time.Second)
		if in, _ := awaitVersion(t, client, info.ID, to, 10*time.Second); in.PID != served {
			t.Fatalf("the mount moved (process %d → %d) after the old supervisor restarted", served, in.PID)
		}
		from.stop(t) // the old pod is deleted
		w.awaitProgress(t, 2*time.Minute, map[string]int64{"seqwrite": 5})
		return g
	}
	genB := step(genA, csiB, "vB")
	genA2 := step(genB, csiA, "vA")

	ops := w.stop(t, 5*time.Minute)
	for _, v := range w.verifies() {
		verifyObject(t, cl, v.Key, v.Size, v.SHA256)
	}
	for _, e := range w.errors() {
		t.Error(e)
	}
	slices.Sort(took)
	t.Logf("hand-offs (new container started → mount served by it): %v; operations per worker: %v; %d objects verified",
		took, ops, len(w.verifies()))
	infos, err := client.List(context.Background())
	if err != nil || len(infos) != 1 || infos[0].Version != "vA" || infos[0].HandOffs != 2 || infos[0].Dead {
		t.Fatalf("at the end: %+v, %v", infos, err)
	}
	_ = genA2
}

// pidOf returns the server PID of mount id on the node socket.
func pidOf(t *testing.T, c *supervisor.Client, id string) int {
	t.Helper()
	infos, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ID == id {
			return in.PID
		}
	}
	t.Fatalf("no mount %s: %+v", id, infos)
	return 0
}

// eventuallyAnswers waits until a supervisor answers on c.
func eventuallyAnswers(t *testing.T, c *supervisor.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.List(context.Background()); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("no supervisor answers on %s: %v", c.Path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFailedHandoffGoesBack: a new node pod whose FUSE server cannot start
// (here a broken binary) releases nothing for good: the mount it asked for
// goes back to the running supervisor, which resumes it with its own
// server; what was written before stays, and the mount keeps working.
func TestFailedHandoffGoesBack(t *testing.T) {
	n := newNodeWithTwoVersions(t)
	dir, bin, k, s3srv, csiA, csiB, m, target, cfg, sock, client := n.dir, n.bin, n.k, n.s3, n.csiA, n.csiB, n.m, n.target, n.cfg, n.sock, n.client
	broken := filepath.Join(dir, "broken-fuse")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'this build cannot serve' >&2\nexit 3\n"), 0o755); err != nil { //nolint:gosec // an executable
		t.Fatal(err)
	}

	genA := startGeneration(t, csiA, "vA", sock, cfg.StateDir, bin)
	eventuallyAnswers(t, client)
	info := startOn(t, m, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3srv.URL, Bucket: "bkt",
		Options: "use_path_request_style"}, k, client.Start)
	if err := os.WriteFile(filepath.Join(target, "before"), []byte("written before"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := pidOf(t, client, info.ID)

	genB := startGeneration(t, csiB, "vB", sock, cfg.StateDir, broken)
	genB.awaitLog(t, "mount not taken over; it stays with the running supervisor", 2*time.Minute)
	genA.awaitLog(t, "mount restored after a failed hand-off", 30*time.Second)
	in, _ := awaitVersion(t, client, info.ID, "vA", 30*time.Second)
	if in.PID == before {
		t.Fatalf("the mount is still served by process %d: it was never released", before)
	}
	if b, err := os.ReadFile(filepath.Join(target, "before")); err != nil || string(b) != "written before" {
		t.Fatalf("read after the failed hand-off: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "after"), []byte("written after"), 0o644); err != nil {
		t.Fatalf("write after the failed hand-off: %v", err)
	}
	for key, want := range map[string]string{"before": "written before", "after": "written after"} {
		if got := object(t, s3srv, k, key); got != want {
			t.Fatalf("%s in the bucket: %q", key, got)
		}
	}

	// The new pod keeps failing its takeover (its readiness says why);
	// deleting it leaves the mount alone.
	_ = genB.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-genB.exited:
	case <-time.After(90 * time.Second):
		t.Fatal("the failed generation did not stop")
	}
	if got := pidOf(t, client, info.ID); got != in.PID {
		t.Fatalf("the mount moved (process %d → %d) when the failed pod went", in.PID, got)
	}
}

// nodeWithTwoVersions is a node for hand-off tests: rekey-csi built as
// versions vA and vB, one mount target, the node's supervisor socket and
// a client of it.
type nodeWithTwoVersions struct {
	dir, bin, csiA, csiB string
	k                    keys.Keys
	s3                   *fakes3.Server
	m                    mounter.Interface
	target, sock         string
	cfg                  supervisor.Config
	client               *supervisor.Client
}

func newNodeWithTwoVersions(t *testing.T) nodeWithTwoVersions {
	t.Helper()
	needRoot(t)
	n := nodeWithTwoVersions{}
	n.dir, n.bin, n.k, n.s3 = setup(t)
	n.csiA, n.csiB = buildCSI(t, n.dir, "vA"), buildCSI(t, n.dir, "vB")
	n.m, n.target, n.cfg = newTarget(t, n.dir, n.bin)
	n.sock = filepath.Join(n.dir, "sup.sock")
	n.client = &supervisor.Client{Path: n.sock, Timeout: 30 * time.Second}
	return n
}
