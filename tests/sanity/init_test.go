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
// dies is reaped (no zombie) and its mount aborted.
func TestInitKeepsServersAlive(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	dir := shortTempDir(t)
	supSock := filepath.Join(dir, "sup.sock")
	csiSock := filepath.Join(dir, "csi.sock")
	logPath := filepath.Join(dir, "log")
	bin := filepath.Join(binDir, "rekey-csi")
	init := startProc(t, logPath, "init", "-v=1", "--", bin, "supervisor", "--supervisor-socket="+supSock,
		"--state-dir="+filepath.Join(dir, "state"), "--fuse-binary="+filepath.Join(binDir, "rekey-fuse"))
	t.Cleanup(func() {
		// SIGTERM: init stops its supervisor and returns.
		_ = init.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-init.done:
		case <-time.After(5 * time.Second):
		}
	})
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("log:\n%s", b)
		}
	}()
	sc := &supervisor.Client{Path: supSock, Timeout: 2 * time.Second}
	waitFor(t, "supervisor", 10*time.Second, func() bool { _, err := sc.List(context.Background()); return err == nil })
	startProc(t, logPath, "driver", "--endpoint=unix://"+csiSock, "--node-id=n", "--kubelet-root-dir="+filepath.Join(dir, "kubelet"),
		"--supervisor-socket="+supSock, "--register=false")
	node := nodeClient(t, csiSock)
	waitFor(t, "driver", 10*time.Second, func() bool {
		_, err := node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
		return err == nil
	})
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
	kids := children(init.cmd.Process.Pid)
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
	if got := ppid(server); got != init.cmd.Process.Pid {
		t.Errorf("FUSE server's parent = %d, want init %d", got, init.cmd.Process.Pid)
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
	waitFor(t, "an error on the dead mount", 5*time.Second, func() bool { _, err := os.ReadDir(target); return err != nil })
	waitFor(t, "the mount reported dead", 5*time.Second, func() bool {
		in, err := sc.List(ctx)
		return err == nil && len(in) == 1 && in[0].Dead
	})
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv", TargetPath: target}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target left after unpublish: %v", err)
	}
}
