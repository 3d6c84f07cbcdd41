package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/control"
)

// The pod socket serves the sidecar's UID alone, so a test reaches it from
// a child process running as that UID: this test binary, copied where any
// user may run it, in the mode TestAsPeerHelper selects.
const (
	helperEnvSocket     = "REKEY_TEST_PEER_SOCKET" // path as the child sees it
	helperEnvVolume     = "REKEY_TEST_PEER_VOLUME"
	helperEnvSupervisor = "REKEY_TEST_PEER_SUPERVISOR" // set: the socket is a supervisor's
)

// TestAsPeerHelper is not a test: run by statusAs in a child process, it
// asks the server on the socket for its Status and sends a Report, and
// prints the volume ID; run by listAs, it asks a supervisor for its mounts
// and prints how many.
func TestAsPeerHelper(t *testing.T) {
	sock := os.Getenv(helperEnvSocket)
	if sock == "" {
		t.Skip("helper of statusAs and listAs")
	}
	if os.Getenv(helperEnvSupervisor) != "" {
		infos, err := (&supervisor.Client{Path: sock, Timeout: 10 * time.Second}).List(context.Background())
		if err != nil {
			fmt.Println("ERR", err)
			return
		}
		fmt.Println("MOUNTS", len(infos))
		return
	}
	c, err := control.NewClient(sock)
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Println("ERR", control.Code(err))
		return
	}
	if err := c.Report(ctx, os.Getenv(helperEnvVolume), "rrsa", "via the pod socket"); err != nil {
		fmt.Println("ERR", control.Code(err))
		return
	}
	fmt.Println("VOLUME", st.VolumeID)
}

// statusAs connects to the socket name in the directory dirFD as uid:gid
// from a child process and returns the volume ID it was told, or the error
// it got ("ERR <code>").
func statusAs(t *testing.T, uid, gid uint32, dirFD int, name, volumeID string) string {
	t.Helper()
	return asPeer(t, uid, gid, dirFD, "VOLUME ", helperEnvSocket+"=/proc/self/fd/3/"+name, helperEnvVolume+"="+volumeID)
}

// listAs asks the supervisor on the socket name in the directory dirFD
// for its mounts as uid:gid from a child process and returns how many it
// was told, or the error it got ("ERR ...").
func listAs(t *testing.T, uid, gid uint32, dirFD int, name string) string {
	t.Helper()
	return asPeer(t, uid, gid, dirFD, "MOUNTS ", helperEnvSocket+"=/proc/self/fd/3/"+name, helperEnvSupervisor+"=1")
}

// asPeer runs TestAsPeerHelper as uid:gid with env, the directory dirFD as
// its descriptor 3, and returns what follows want on a line of its output,
// or a line starting with "ERR ".
func asPeer(t *testing.T, uid, gid uint32, dirFD int, want string, env ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "rkpeer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyExe := filepath.Join(dir, "peer.test")
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(copyExe, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	_ = in.Close()
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copyExe, "-test.run=^TestAsPeerHelper$", "-test.count=1")
	// The directory reaches the child as descriptor 3, as the sidecar
	// reaches its socket through a short name.
	dup, err := syscall.Dup(dirFD)
	if err != nil {
		t.Fatal(err)
	}
	dirFile := os.NewFile(uintptr(dup), "socket-dir")
	defer dirFile.Close()
	cmd.ExtraFiles = []*os.File{dirFile}
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("peer helper as %d: %v\n%s", uid, err, b)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, want); ok {
			return v
		}
		if strings.HasPrefix(line, "ERR ") {
			return line
		}
	}
	t.Fatalf("peer helper as %d said nothing useful:\n%s", uid, b)
	return ""
}

// TestSupervisorRefusesNonRootPeer: the supervisor socket is 0600 and
// root's, and behind that the supervisor answers root alone (SO_PEERCRED):
// with the socket opened to everyone, a process of another UID still gets
// no answer, and root does.
func TestSupervisorRefusesNonRootPeer(t *testing.T) {
	needRoot(t)
	dir, err := os.MkdirTemp("", "rksuppeer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup, err := supervisor.New(ctx, supervisor.Config{FuseBinary: "/bin/false", StateDir: filepath.Join(dir, "state"), Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, served := serveSocket(t, ctx, sup, dir)
	defer func() { cancel(); <-served }()
	if err := os.Chmod(filepath.Join(dir, "sup.sock"), 0o666); err != nil { //nolint:gosec // opened on purpose: the UID check must stand alone
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	if got := listAs(t, 65532, 65532, dfd, "sup.sock"); !strings.HasPrefix(got, "ERR ") {
		t.Fatalf("a non-root peer was answered: %q", got)
	}
	if got := listAs(t, 0, 0, dfd, "sup.sock"); got != "0" {
		t.Fatalf("root was not answered: %q", got)
	}
}
