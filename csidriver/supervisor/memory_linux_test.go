//go:build linux

package supervisor_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

// memEnv is a real rekey-fuse binary and an in-process S3 server with
// bucket bkt, for the memory budget tests and benchmark.
type memEnv struct {
	dir, bin string
	k        keys.Keys
	s3       *fakes3.Server
	m        mounter.Interface
}

func newMemEnv(tb testing.TB) *memEnv {
	tb.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatal("needs root and /dev/fuse")
		}
		tb.Skip("needs root and /dev/fuse")
	}
	dir, err := os.MkdirTemp("", "rkmem") // short: socket paths
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	e := &memEnv{dir: dir, bin: filepath.Join(dir, "rekey-fuse"), k: fakes3.NewKeys("AKMEM"), m: mounter.New()}
	if out, err := exec.Command("go", "build", "-o", e.bin, "rekey.dev/rekey/cmd/rekey-fuse").CombinedOutput(); err != nil {
		tb.Fatalf("build rekey-fuse: %v\n%s", err, out)
	}
	if e.s3, err = fakes3.Start(e.k, "bkt"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.s3.Close() })
	return e
}

// put stores n bytes of a repeating pattern as key.
func (e *memEnv) put(tb testing.TB, key string, n int) {
	tb.Helper()
	body := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	if _, err := e.s3.Client(e.k).PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bkt"),
		Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
}

// supervisor starts a Supervisor on its own state directory with mem.
func (e *memEnv) supervisor(tb testing.TB, name string, mem supervisor.ServerMemory, log logr.Logger) (*supervisor.Supervisor, supervisor.Config) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	cfg := supervisor.Config{FuseBinary: e.bin, StateDir: filepath.Join(e.dir, name+".state"), Aborter: e.m, Log: log, Memory: mem}
	sup, err := supervisor.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return sup, cfg
}

// mount mounts bucket bkt at a new target with a server of sup, stopped
// and unmounted when the test ends.
func (e *memEnv) mount(tb testing.TB, sup *supervisor.Supervisor, name, options string) supervisor.Info {
	tb.Helper()
	target := filepath.Join(e.dir, name)
	if err := os.Mkdir(target, 0o750); err != nil {
		tb.Fatal(err)
	}
	fuse, err := e.m.MountFUSE(target, mounter.FUSEOptions{Source: "rekey:bkt", Subtype: "rekey", AllowOther: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = fuse.Close() }()
	spec := supervisor.Spec{Target: target, VolumeID: name, Endpoint: e.s3.URL, Bucket: "bkt", Options: options}
	if spec.ConnectionID, err = e.m.ConnectionID(target); err != nil {
		tb.Fatal(err)
	}
	info, err := sup.Start(context.Background(), spec, supervisor.Descriptors{Fuse: fuse}, e.k)
	if err != nil {
		_ = e.m.Unmount(target)
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(func() {
		_ = sup.Stop(context.Background(), info.ID)
		_ = e.m.Unmount(target)
	})
	return info
}

// v1MemoryCgroup returns this process's cgroup v1 memory directory, if it
// has one that is writable ("" otherwise: the supervisor-level cgroup
// checks run on v1 only, since on v2 the supervisor moves every process
// of its cgroup, here the test's and its siblings', into a leaf).
func v1MemoryCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, strings.SplitN(l, ":", 2)[0]+":memory:"); ok {
			dir := filepath.Join("/sys/fs/cgroup/memory", p)
			if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
				return ""
			}
			probe := filepath.Join(dir, fmt.Sprintf("rekey-probe-%d", os.Getpid()))
			if os.Mkdir(probe, 0o755) != nil {
				return ""
			}
			_ = os.Remove(probe)
			return dir
		}
	}
	return ""
}

// procStatus reads a field in kB of /proc/<pid>/status, in MiB.
func procStatus(tb testing.TB, pid int, field string) float64 {
	tb.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func readInt(tb testing.TB, path string) int64 {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return n
}

// TestServerMemoryBudget runs real rekey-fuse servers under a 128 MiB
// budget: GOMEMLIMIT is their only environment, read-ahead is lowered to
// fit, and (on cgroup v1, as on CI) each runs in a memory cgroup of its
// own. A server pushed over its limit is OOM-killed alone, resumed in
// the same cgroup with its limit, and the read in flight completes; the
// cgroup goes with the mount.
func TestServerMemoryBudget(t *testing.T) {
	e := newMemEnv(t)
	cgDir := v1MemoryCgroup()
	if cgDir == "" && os.Getenv("CI") == "true" {
		t.Fatal("CI's machine has a writable cgroup v1 memory hierarchy; none found")
	}
	sup, _ := e.supervisor(t, "sup", supervisor.ServerMemory{BudgetMiB: 128, Cgroups: cgDir != ""}, testr.New(t))
	events, cancel := sup.Subscribe()
	defer cancel()
	info := e.mount(t, sup, "a", "use_path_request_style")
	other := e.mount(t, sup, "b", "use_path_request_style,readahead_mb=8")

	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", info.PID))
	if err != nil || string(env) != "GOMEMLIMIT=117440512\x00" { // 112 MiB
		t.Errorf("server environment %q, %v; want GOMEMLIMIT=117440512 alone", env, err)
	}
	for pid, want := range map[int]string{info.PID: "--o=use_path_request_style,readahead_mb=24",
		other.PID: "--o=use_path_request_style,readahead_mb=8"} {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.Contains(cmdline, []byte("\x00"+want+"\x00")) {
			t.Errorf("server %d command line %q, want %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), want)
		}
	}
	if cgDir == "" {
		t.Log("no writable cgroup v1 memory hierarchy: the cgroup part is not checked")
		return
	}
	cg := filepath.Join(cgDir, "rekey-fuse-"+info.ID)
	if got := readInt(t, filepath.Join(cg, "memory.limit_in_bytes")); got != 128<<20 {
		t.Errorf("memory.limit_in_bytes = %d, want 128 MiB", got)
	}
	if got := readInt(t, filepath.Join(cg, "cgroup.procs")); got != int64(info.PID) {
		t.Errorf("the server's cgroup holds %d, want %d", got, info.PID)
	}

	// Leave the server only a few MiB beyond what it uses: its first
	// read-ahead chunks do not fit, and the kernel kills it, and only it.
	e.put(t, "big", 64<<20)
	usage := readInt(t, filepath.Join(cg, "memory.usage_in_bytes"))
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte(strconv.FormatInt(usage+4<<20, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The read runs in a child process: a process with a file open on a
	// mount whose server is dead must not start processes itself (the
	// supervisor here starts the resumed server; see internal/forksafe).
	start := time.Now()
	n, err := countBytes(filepath.Join(info.Spec.Target, "big"))
	t.Logf("read of 64 MiB across the OOM kill: %d bytes, %v, in %s", n, err, time.Since(start))
	if oom := readOOMKills(t, cg); oom < 1 {
		t.Fatalf("the server's cgroup counts %d OOM kills, want at least 1 (limit %d, usage was %d)", oom, usage+4<<20, usage)
	}
	var resumed supervisor.Event
	for deadline := time.After(30 * time.Second); resumed.Kind == ""; {
		select {
		case ev := <-events:
			if ev.MountID == info.ID && (ev.Kind == supervisor.EventResumed || ev.Kind == supervisor.EventDied) {
				resumed = ev
			}
		case <-deadline:
			t.Fatal("no resumed event after the OOM kill")
		}
	}
	if resumed.Kind != supervisor.EventResumed {
		t.Fatalf("after the OOM kill: %+v, want resumed", resumed)
	}
	t.Logf("resumed: %s", resumed.Reason)
	if err != nil || n != 64<<20 {
		t.Errorf("the read in flight got %d bytes, %v; want all of it (resent to the resumed server)", n, err)
	}
	infos, _ := sup.List(context.Background())
	for _, in := range infos {
		if in.ID == other.ID && (in.PID != other.PID || in.Dead) {
			t.Errorf("the other server was affected: %+v", in)
		}
		if in.ID != info.ID {
			continue
		}
		if got := readInt(t, filepath.Join(cg, "cgroup.procs")); got != int64(in.PID) || in.PID == info.PID {
			t.Errorf("after the resume the cgroup holds %d, want the new server %d", got, in.PID)
		}
	}
	if got := readInt(t, filepath.Join(cg, "memory.limit_in_bytes")); got != 128<<20 {
		t.Errorf("memory.limit_in_bytes after the resume = %d, want 128 MiB again", got)
	}
	if b, err := os.ReadFile(filepath.Join(info.Spec.Target, "big")); err != nil || len(b) != 64<<20 {
		t.Errorf("read after the resume: %d bytes, %v", len(b), err)
	}

	if err := sup.Stop(context.Background(), info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the server's cgroup is still there after Stop: %v", err)
	}
}

// countBytes reads path to its end in a child process and returns how
// many bytes it read.
func countBytes(path string) (int64, error) {
	out, err := exec.Command("sh", "-c", `cat "$1" | wc -c`, "sh", path).Output()
	if err != nil {
		return 0, fmt.Errorf("cat %s: %w", path, err)
	}
	return strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
}

func readOOMKills(t *testing.T, cg string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg, "memory.oom_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// BenchmarkServerMemory measures the memory of one real rekey-fuse
// process, idle and under load (a 256 MiB sequential write through the
// mount, a 256 MiB sequential read of an object, four parallel readers
// of 64 MiB objects), without a budget, with the default budget alone
// (GOMEMLIMIT and read-ahead) and with its cgroup too (cgroup v1 only,
// see v1MemoryCgroup). It reports RSS in MiB: idle, the peak (VmHWM) of
// each phase, 5 s after the load; the throughput; and the cgroup's peak
// (which counts the page cache of the server's staging files) and how
// often it reached its limit. Run it with `make bench-memory`.
func BenchmarkServerMemory(b *testing.B) {
	e := newMemEnv(b)
	e.put(b, "read", 256<<20)
	for i := range 4 {
		e.put(b, "par"+strconv.Itoa(i), 64<<20)
	}
	cgDir := v1MemoryCgroup()
	n := 0
	for _, v := range []struct {
		name string
		mem  supervisor.ServerMemory
	}{
		{"none", supervisor.ServerMemory{}},
		{"budget=256MiB,no-cgroup", supervisor.ServerMemory{BudgetMiB: 256}},
		{"budget=256MiB,cgroup", supervisor.ServerMemory{BudgetMiB: 256, Cgroups: true}},
	} {
		budget := v.mem.BudgetMiB
		if v.mem.Cgroups && cgDir == "" {
			b.Logf("%s: no writable cgroup v1 memory hierarchy here", v.name)
			continue
		}
		b.Run(v.name, func(b *testing.B) {
			n++
			sup, _ := e.supervisor(b, fmt.Sprintf("b%d", n), v.mem, logr.Discard())
			info := e.mount(b, sup, fmt.Sprintf("m%d", n), "use_path_request_style")
			pid := info.PID
			resetPeak := func() {
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200); err != nil {
					b.Fatal(err)
				}
			}
			time.Sleep(2 * time.Second)
			b.ReportMetric(procStatus(b, pid, "VmRSS"), "idle-RSS-MiB")
			phase := func(name string, bytes int64, run func() error) {
				resetPeak()
				start := time.Now()
				if err := run(); err != nil {
					b.Fatalf("%s: %v", name, err)
				}
				b.ReportMetric(procStatus(b, pid, "VmHWM"), name+"-peak-RSS-MiB")
				b.ReportMetric(float64(bytes)/(1<<20)/time.Since(start).Seconds(), name+"-MiB/s")
			}
			for range b.N {
				phase("write", 256<<20, func() error {
					return dd("if=/dev/zero", "of="+filepath.Join(info.Spec.Target, "written"), "bs=1M", "count=256")
				})
				phase("read", 256<<20, func() error { return dd("if="+filepath.Join(info.Spec.Target, "read"), "of=/dev/null", "bs=1M") })
				phase("read4", 4*64<<20, func() error {
					var wg sync.WaitGroup
					errs := make([]error, 4)
					for i := range 4 {
						wg.Go(func() {
							errs[i] = dd("if="+filepath.Join(info.Spec.Target, "par"+strconv.Itoa(i)), "of=/dev/null", "bs=1M")
						})
					}
					wg.Wait()
					for _, err := range errs {
						if err != nil {
							return err
						}
					}
					return nil
				})
			}
			time.Sleep(5 * time.Second)
			b.ReportMetric(procStatus(b, pid, "VmRSS"), "after-RSS-MiB")
			if budget > 0 && v.mem.Cgroups {
				cg := filepath.Join(cgDir, "rekey-fuse-"+info.ID)
				b.ReportMetric(float64(readInt(b, filepath.Join(cg, "memory.max_usage_in_bytes")))/(1<<20), "cgroup-peak-MiB")
				b.ReportMetric(float64(readInt(b, filepath.Join(cg, "memory.failcnt"))), "cgroup-failcnt")
			}
		})
	}
}

// dd runs dd with args. The I/O on the mounts runs in child processes:
// should a server be OOM-killed, the process holding files on its mount
// must not be the one (the supervisor here) that starts its successor
// (internal/forksafe).
func dd(args ...string) error {
	if out, err := exec.Command("dd", append(args, "status=none")...).CombinedOutput(); err != nil {
		return fmt.Errorf("dd %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
