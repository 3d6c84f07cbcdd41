//go:build linux

package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
)

func TestFindOwnCgroup(t *testing.T) {
	const (
		v1Mounts = "35 31 0:32 %s /sys/fs/cgroup/memory %s,relatime - cgroup cgroup rw,memory\n" +
			"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
			"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
		v2Mount = "30 25 0:26 %s /sys/fs/cgroup %s,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
		pod     = "/kubepods/burstable/pod1/ctr1"
	)
	for _, tc := range []struct {
		name, cgroup, mountinfo string
		want                    ownCgroup
		wantErr                 string
	}{
		{
			name:      "v1 host view (this test machine)",
			cgroup:    "4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
			mountinfo: fmt.Sprintf(v1Mounts, "/", "rw"),
			want:      ownCgroup{mountpoint: "/sys/fs/cgroup/memory", rel: "process_api/abc"},
		},
		{
			// Without a cgroup namespace the file shows the host's path
			// and the mount's root is the container's cgroup: the
			// container's cgroup is the mount's root, not a path below it.
			name:      "v1 container without cgroupns",
			cgroup:    "4:memory:" + pod + "\n0::/\n",
			mountinfo: fmt.Sprintf(v1Mounts, pod, "rw"),
			want:      ownCgroup{mountpoint: "/sys/fs/cgroup/memory", rel: "."},
		},
		{
			name:      "v1 read-only (unprivileged container)",
			cgroup:    "4:memory:" + pod + "\n",
			mountinfo: fmt.Sprintf(v1Mounts, pod, "ro"),
			want:      ownCgroup{mountpoint: "/sys/fs/cgroup/memory", rel: ".", readOnly: true},
		},
		{
			name:      "v2 with cgroupns (Kubernetes on cgroup v2)",
			cgroup:    "0::/\n",
			mountinfo: fmt.Sprintf(v2Mount, "/", "rw"),
			want:      ownCgroup{v2: true, mountpoint: "/sys/fs/cgroup", rel: "."},
		},
		{
			name:      "v2 with cgroupns, restarted supervisor in its leaf",
			cgroup:    "0::/" + supervisorLeaf + "\n",
			mountinfo: fmt.Sprintf(v2Mount, "/", "rw"),
			want:      ownCgroup{v2: true, mountpoint: "/sys/fs/cgroup", rel: supervisorLeaf},
		},
		{
			name:      "v2 host cgroupns, whole hierarchy mounted",
			cgroup:    "0::/system.slice/containerd.service\n",
			mountinfo: fmt.Sprintf(v2Mount, "/", "rw"),
			want:      ownCgroup{v2: true, mountpoint: "/sys/fs/cgroup", rel: "system.slice/containerd.service"},
		},
		{
			name:      "v2 host cgroupns, the container's cgroup bind-mounted",
			cgroup:    "0::/kubepods.slice/cri-x.scope\n",
			mountinfo: fmt.Sprintf(v2Mount, "/kubepods.slice/cri-x.scope", "rw"),
			want:      ownCgroup{v2: true, mountpoint: "/sys/fs/cgroup", rel: "."},
		},
		{
			name:      "no mount shows the cgroup",
			cgroup:    "0::/elsewhere\n",
			mountinfo: fmt.Sprintf(v2Mount, "/kubepods.slice/cri-x.scope", "rw"),
			wantErr:   "no mount of cgroup v2 shows this process's cgroup /elsewhere",
		},
		{
			name:      "no memory hierarchy",
			cgroup:    "1:cpu:/\n",
			mountinfo: fmt.Sprintf(v1Mounts, "/", "rw"),
			wantErr:   "in no memory cgroup",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cg, mi := filepath.Join(dir, "cgroup"), filepath.Join(dir, "mountinfo")
			if err := os.WriteFile(cg, []byte(tc.cgroup), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mi, []byte(tc.mountinfo), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := findOwnCgroup(cg, mi)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("findOwnCgroup = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// cgroupsOrSkip returns this process's memory cgroup, or skips the test
// (fails it under CI=true: CI's machine has a writable memory cgroup).
func cgroupsOrSkip(t *testing.T, why string) ownCgroup {
	t.Helper()
	own, err := findOwnCgroup("/proc/self/cgroup", "/proc/self/mountinfo")
	if err == nil && own.readOnly {
		err = fmt.Errorf("%s is read-only", own.mountpoint)
	}
	if err == nil && os.Geteuid() != 0 {
		err = errors.New("not root")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: no writable memory cgroup: %v", why, err)
		}
		t.Skipf("%s needs a writable memory cgroup: %v", why, err)
	}
	return own
}

// testBase makes an empty cgroup for a test's per-server cgroups: below
// this process's own on v1; on v2 below the hierarchy's root (a cgroup
// with processes, such as a test's own, cannot give children the memory
// controller), removed when the test ends.
func testBase(t *testing.T, own ownCgroup) ownCgroup {
	t.Helper()
	base := own
	name := fmt.Sprintf("rekey-test-%d", os.Getpid())
	if own.v2 {
		base.rel = name
	} else {
		base.rel = filepath.Join(own.rel, name)
	}
	if err := os.Mkdir(base.dir(), 0o755); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("make a test cgroup: %v", err)
		}
		t.Skipf("cannot make a test cgroup: %v", err)
	}
	t.Cleanup(func() { removeTree(t, base.dir()) })
	return base
}

// removeTree removes a cgroup and the cgroups below it, killing what
// still runs there.
func removeTree(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeTree(t, filepath.Join(dir, e.Name()))
		}
	}
	for _, pid := range pids(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for i := 0; i < 50; i++ {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("test cgroup %s left behind", dir)
}

func pids(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// hogProc is a `sh -c` process of a test.
type hogProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{} // closed when it exited, with err set
	err  error
}

func (h *hogProc) pid() int { return h.cmd.Process.Pid }

// release lets the script go on past its first line.
func (h *hogProc) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(h.in, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// hog starts `sh -c script` that waits for a line on stdin (release)
// before it runs the rest of script. It is killed when the test ends.
func hog(t *testing.T, script string) *hogProc {
	t.Helper()
	h := &hogProc{cmd: exec.Command("sh", "-c", "read go; "+script), done: make(chan struct{})}
	var err error
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.err = h.cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		_ = h.in.Close()
		<-h.done
	})
	return h
}

// oomKills reads the OOM kill counter of a cgroup (v1 memory.oom_control,
// v2 memory.events).
func oomKills(t *testing.T, c *memoryCgroups, id string) int {
	t.Helper()
	file := "memory.oom_control"
	if c.v2 != nil {
		file = "memory.events"
	}
	f, err := os.Open(filepath.Join(c.dir, serverCgroupName(id), file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no oom_kill in %s", file)
	return 0
}

// TestServerCgroupOOM: a process that allocates past the limit of its
// per-server cgroup is OOM-killed, while a process in a sibling per-server
// cgroup, holding memory of its own, keeps running; both cgroups are gone
// after release.
func TestServerCgroupOOM(t *testing.T) {
	own := cgroupsOrSkip(t, "the per-server cgroup OOM test")
	c, err := newMemoryCgroups(testBase(t, own))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skipf("per-server cgroups cannot be made here: %v", err)
	}
	const limit = 64 << 20
	// The sibling holds 32 MiB (tail buffers the one line it is given
	// until its input ends, which the sleep delays).
	sibling := hog(t, "(head -c 33554432 /dev/zero; exec sleep 600) | tail -n 1 >/dev/null")
	// The victim would hold 512 MiB: bounded, should confinement fail.
	victim := hog(t, "head -c 536870912 /dev/zero | tail -n 1 >/dev/null")
	if err := c.confine("sibling", sibling.pid(), limit); err != nil {
		t.Fatal(err)
	}
	if err := c.confine("victim", victim.pid(), limit); err != nil {
		t.Fatal(err)
	}
	for id, pid := range map[string]int{"sibling": sibling.pid(), "victim": victim.pid()} {
		limitFile := "memory.limit_in_bytes"
		if c.v2 != nil {
			limitFile = "memory.max"
		}
		b, err := os.ReadFile(filepath.Join(c.dir, serverCgroupName(id), limitFile))
		if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(limit) {
			t.Fatalf("%s of %s = %q, %v; want %d", limitFile, id, b, err, limit)
		}
		if got := pids(filepath.Join(c.dir, serverCgroupName(id))); len(got) != 1 || got[0] != pid {
			t.Fatalf("cgroup of %s holds %v, want [%d]", id, got, pid)
		}
	}
	sibling.release(t)
	time.Sleep(500 * time.Millisecond) // the sibling takes its 32 MiB
	victim.release(t)
	select {
	case <-victim.done:
		var exit *exec.ExitError
		// sh reports its pipeline's last command killed by SIGKILL as 137.
		if !errors.As(victim.err, &exit) || exit.ExitCode() != 128+int(syscall.SIGKILL) {
			t.Fatalf("victim ended with %v, want killed (exit status 137)", victim.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the victim was not killed at its limit within 60s")
	}
	if n := oomKills(t, c, "victim"); n < 1 {
		t.Errorf("victim's cgroup counts %d OOM kills, want at least 1", n)
	}
	if n := oomKills(t, c, "sibling"); n != 0 {
		t.Errorf("sibling's cgroup counts %d OOM kills, want 0", n)
	}
	select {
	case <-sibling.done:
		t.Fatalf("the sibling ended too: %v", sibling.err)
	case <-time.After(time.Second):
	}
	procs := pids(filepath.Join(c.dir, serverCgroupName("sibling")))
	if len(procs) < 3 { // sh, the subshell's sleep, tail
		t.Errorf("sibling cgroup holds %v, want its three processes running", procs)
	}
	t.Logf("victim OOM-killed at %d MiB; sibling processes %v still run", limit>>20, procs)

	if err := c.release("victim"); err != nil {
		t.Errorf("release victim: %v", err)
	}
	if err := c.release("sibling"); err == nil {
		t.Error("released the cgroup of a running process")
	}
	_ = sibling.cmd.Process.Kill()
	<-sibling.done
	for _, pid := range procs { // the pipeline's other processes
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := c.release("sibling"); err != nil {
		t.Errorf("release sibling: %v", err)
	}
	if err := c.release("never-made"); err != nil {
		t.Errorf("release of a cgroup never made: %v", err)
	}
	for _, id := range []string{"victim", "sibling"} {
		if _, err := os.Stat(filepath.Join(c.dir, serverCgroupName(id))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup of %s still there: %v", id, err)
		}
	}
}

// TestMemoryCgroupsUnavailable: where the memory controller cannot be had,
// newMemoryCgroups says why (the supervisor then logs it once and runs
// the servers unconfined).
func TestMemoryCgroupsUnavailable(t *testing.T) {
	_, err := newMemoryCgroups(ownCgroup{mountpoint: "/sys/fs/cgroup/memory", rel: ".", readOnly: true})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("read-only cgroupfs: %v", err)
	}
	_, err = newMemoryCgroups(ownCgroup{mountpoint: t.TempDir(), rel: "."})
	if err == nil || !strings.Contains(err.Error(), "cgroup.procs") {
		t.Errorf("not a cgroup: %v", err)
	}
}

// TestEnableV2MovesProcesses: on cgroup v2 the processes of the base
// cgroup move into the supervisor's leaf before the memory controller is
// enabled for the base's children. It runs on a v2 hierarchy without the
// memory controller (the hybrid layout of cgroup v1 hosts): the move
// happens, enabling memory is refused with the reason.
func TestEnableV2MovesProcesses(t *testing.T) {
	mnt := ""
	for _, m := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st syscall.Statfs_t
		if syscall.Statfs(m, &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			mnt = m
			break
		}
	}
	if mnt == "" || os.Geteuid() != 0 {
		t.Skip("needs root and a cgroup v2 hierarchy")
	}
	base := ownCgroup{v2: true, mountpoint: mnt, rel: fmt.Sprintf("rekey-test-v2-%d", os.Getpid())}
	if err := os.Mkdir(base.dir(), 0o755); err != nil {
		t.Skipf("cannot make a v2 test cgroup: %v", err)
	}
	t.Cleanup(func() { removeTree(t, base.dir()) })
	sleeper := hog(t, "exec sleep 600")
	if err := os.WriteFile(filepath.Join(base.dir(), "cgroup.procs"), []byte(strconv.Itoa(sleeper.pid())), 0o644); err != nil {
		t.Skipf("cannot move a process into a v2 test cgroup: %v", err)
	}
	_, err := newMemoryCgroups(base)
	ctrls, _ := os.ReadFile(filepath.Join(base.dir(), "cgroup.controllers"))
	if strings.Contains(string(ctrls), "memory") {
		// A v2 host: the whole thing works.
		if err != nil {
			t.Fatalf("newMemoryCgroups: %v", err)
		}
		sub, _ := os.ReadFile(filepath.Join(base.dir(), "cgroup.subtree_control"))
		if !strings.Contains(string(sub), "memory") {
			t.Errorf("subtree_control %q, want memory", sub)
		}
	} else {
		if err == nil || !strings.Contains(err.Error(), "memory controller is not delegated") {
			t.Fatalf("newMemoryCgroups without the memory controller: %v", err)
		}
		c := &memoryCgroups{dir: base.dir(), rel: "/" + base.rel, mountpoint: mnt}
		if c.v2, err = cgroup2.Load(c.rel, cgroup2.WithMountpoint(mnt)); err != nil {
			t.Fatal(err)
		}
		if err := c.enableV2(); err == nil {
			t.Error("enabling memory where it is not available succeeded")
		}
	}
	if got := pids(base.dir()); len(got) != 0 {
		t.Errorf("the base cgroup still holds %v", got)
	}
	if got := pids(filepath.Join(base.dir(), supervisorLeaf)); len(got) != 1 || got[0] != sleeper.pid() {
		t.Errorf("the leaf holds %v, want [%d]", got, sleeper.pid())
	}
}
