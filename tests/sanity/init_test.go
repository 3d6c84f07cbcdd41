package sanity

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/csiproc"
)

func children(pid int) []int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
	}
	return out
}

func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, _ := strconv.Atoi(f[1])
	return n
}

// TestInitKeepsServersAlive runs the supervisor under `rekey-csi init`, as
// in the container: a killed supervisor is started again and adopts the
// FUSE server, which init has adopted as a process; a FUSE server that
// dies is reaped (no zombie) and its mount resumed by a new server.
func TestInitKeepsServersAlive(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	dir := shortTempDir(t)
	supSock := filepath.Join(dir, "sup.sock")
	csiSock := filepath.Join(dir, "csi.sock")
	logPath := filepath.Join(dir, "log")
	bin := filepath.Join(binDir, "rekey-csi")
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("log:\n%s", b)
		}
	}()
	n := &csiproc.Node{Binary: bin, FuseBinary: filepath.Join(binDir, "rekey-fuse"), Dir: dir, NodeID: "n",
		UnderInit: true, InitFlags: []string{"-v=1"}, SupervisorLog: logPath, DriverLog: logPath}
	p, err := n.StartSupervisor(context.Background())
	init := mustStart(t, p, err)
	// SIGTERM: init stops its supervisor and returns.
	t.Cleanup(func() { _ = init.Stop(5 * time.Second) })
	sc := &supervisor.Client{Path: supSock, Timeout: 2 * time.Second}
	p, err = n.StartDriver(context.Background())
	mustStart(t, p, err)
	node := nodeClient(t, csiSock)
	target := filepath.Join(dir, "mnt")
	ctx := context.Background()
	if _, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pv", TargetPath: target,
		VolumeCapability: mountCapability(), VolumeContext: e.volumeContext(), Secrets: secretsOf(e.keys)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	infos, _ := sc.List(ctx)
	if len(infos) != 1 {
		t.Fatalf("mounts = %+v", infos)
	}
	server := infos[0].PID
	kids := children(init.Pid())
	if len(kids) != 1 {
		t.Fatalf("init children = %v, want the supervisor only", kids)
	}
	if err := syscall.Kill(kids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new supervisor that adopted the server", 10*time.Second, func() bool {
		in, err := sc.List(ctx)
		return err == nil && len(in) == 1 && in[0].Adopted
	})
	if got := ppid(server); got != init.Pid() {
		t.Errorf("FUSE server's parent = %d, want init %d", got, init.Pid())
	}
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("still serving"), 0o644); err != nil {
		t.Fatalf("I/O after the supervisor restart: %v", err)
	}
	if err := syscall.Kill(server, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dead server reaped by init", 5*time.Second, func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(server))
		return err != nil
	})
	// The adopted server's descriptors were reclaimed on adoption: the
	// supervisor resumes the mount with a new server, also init's
	// grandchild, and the data written before is still there.
	waitFor(t, "the mount resumed by a new server", 10*time.Second, func() bool {
		in, err := sc.List(ctx)
		return err == nil && len(in) == 1 && !in[0].Dead && in[0].Resumes == 1 && in[0].PID != server
	})
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "still serving" {
		t.Fatalf("read after the resume: %q, %v", b, err)
	}
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv", TargetPath: target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target left after unpublish: %v", err)
	}
}
