package supervisor_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// The kill matrix: "the application sees no error; every byte is verified
// in the bucket".
//
// Why the application runs in a child process: the supervisor starts each
// replacement rekey-fuse with fork+exec from this process. The child gets a
// copy of this process's descriptor table, and exec closes every
// close-on-exec descriptor in it; each close of a file on a FUSE mount is a
// FLUSH. After a kill no server answers that FLUSH, and the child that
// would become the server waits for it inside exec: a deadlock. forksafe
// only moves the vfork child's error-pipe slot out of the way (the close
// before exec, while the parent is frozen); the closes at exec remain, so
// forksafe is not enough once the server is dead. So the process that runs
// the Supervisor never holds a file on the mount (as in production): the
// workers run in the test binary re-executed (TestResumeWorkers, selected
// by resumeWorkersEnv), reporting JSON lines on fd 3. This process only
// stat(2)s the mount (no descriptor) to time the resumes, and reads the
// bucket directly.

const (
	resumeWorkersEnv = "REKEY_RESUME_WORKERS" // the mount target: run the workers there
	killsPerRun      = 5                      // the supervisor gives up at the 6th death within a minute (maxResumes)

	bigWriteSize = 64 << 20 // worker seqwrite: one file, in 1 MiB writes
	roBigSize    = 24 << 20 // worker seqread: a pre-uploaded object
	roMmapSize   = 8 << 20  // worker mmap: a pre-uploaded object
	rwSize       = 4 << 20  // worker overwrite: the staged file
	listEntries  = 300      // worker list
)

// content is the deterministic content of n bytes for seed.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 'r', 'k'})
	_, _ = r.Read(b)
	return b
}

const (
	seedRoBig = 1
	seedMmap  = 2
	seedRW    = 3
)

// workerMsg is one line of the workers' report (fd 3 of the child).
type workerMsg struct {
	Ops    map[string]int64 `json:"ops,omitempty"`    // counts so far, per worker
	Worker string           `json:"worker,omitempty"` // for Err and Key
	Err    string           `json:"err,omitempty"`    // an error a worker saw
	Key    string           `json:"key,omitempty"`    // to verify in the bucket
	Size   int64            `json:"size,omitempty"`
	SHA256 string           `json:"sha256,omitempty"`
	Done   bool             `json:"done,omitempty"` // the child is finished
}

var workerNames = []string{"seqwrite", "overwrite", "seqread", "list", "rename", "createunlink", "mmap"}

// TestResumeUnderLoad SIGKILLs the FUSE server of one mount several times
// while seven application workers (in a child process) use the mount; every
// kill must be resumed by the supervisor without any worker seeing an
// error, and everything written must be in the bucket byte for byte.
func TestResumeUnderLoad(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3srv := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	ctx, stopSup := context.WithCancel(context.Background())
	t.Cleanup(stopSup)

	if os.Getenv("REKEY_RESUME_DEBUG") != "" {
		cfg.ExtraArgs = []string{"-v=1"}
	}
	// Objects the readers know.
	cl := s3srv.Client(k)
	put := func(key string, b []byte) {
		t.Helper()
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(key), Body: bytes.NewReader(b)}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("ro/big", content(seedRoBig, roBigSize))
	put("ro/mm", content(seedMmap, roMmapSize))
	for i := range listEntries {
		put(fmt.Sprintf("list/e-%03d", i), []byte{byte(i)})
	}

	// Files over 8 MiB stream in 5 MiB parts: the writer's files are
	// multipart uploads in progress while it writes.
	sup, events, info := supervise(ctx, t, m, cfg, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3srv.URL,
		Bucket: "bkt", Options: "use_path_request_style,multipart_threshold=8,multipart_size=5"}, k)

	w := startWorkers(t, target, m.AbortConnection, info.Spec.ConnectionID)

	var resumeTimes []time.Duration
	pid := info.PID
	for kill := 1; kill <= killsPerRun; kill++ {
		// Every worker did something since the last resume, and the writer
		// 13 MiB more: the kills land at different points of its files
		// (within a part, at a part's upload, at close).
		w.awaitProgress(t, 2*time.Minute, map[string]int64{"seqwrite": 13})
		took := killAndResume(t, target, pid, events, fmt.Sprintf("%d", kill))
		resumeTimes = append(resumeTimes, took)
		infos, _ := sup.List(ctx)
		if len(infos) != 1 || infos[0].PID == pid || infos[0].Resumes != kill {
			t.Fatalf("after kill %d: %+v", kill, infos)
		}
		pid = infos[0].PID
	}
	w.awaitProgress(t, 2*time.Minute, nil) // every worker works after the last resume too
	ops := w.stop(t, 5*time.Minute)

	// Everything the workers wrote is in the bucket.
	for _, v := range w.verifies() {
		verifyObject(t, cl, v.Key, v.Size, v.SHA256)
	}
	for _, e := range w.errors() {
		t.Error(e)
	}
	slices.Sort(resumeTimes)
	t.Logf("%d kills; kill → next answered request: p50 %v, p99 %v (all: %v)", killsPerRun,
		resumeTimes[len(resumeTimes)/2], resumeTimes[(len(resumeTimes)*99+99)/100-1], resumeTimes)
	t.Logf("operations per worker: %v; %d objects verified in the bucket", ops, len(w.verifies()))
	if t.Failed() {
		return
	}
	infos, _ := sup.List(ctx)
	if len(infos) != 1 || infos[0].Dead || infos[0].Resumes != killsPerRun {
		t.Fatalf("at the end: %+v", infos)
	}
}

// supervise starts a Supervisor on cfg, subscribes to its events and
// starts a server for spec (mounted with m); the server is stopped when the
// test ends.
func supervise(ctx context.Context, t *testing.T, m mounter.Interface, cfg supervisor.Config, spec supervisor.Spec,
	k keys.Keys) (*supervisor.Supervisor, <-chan supervisor.Event, supervisor.Info) {
	t.Helper()
	sup, err := supervisor.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	events, cancelEvents := sup.Subscribe()
	t.Cleanup(cancelEvents)
	info := startOn(t, m, spec, k, sup.Start)
	t.Cleanup(func() { _ = sup.Stop(context.Background(), info.ID) })
	return sup, events, info
}

// killAndResume SIGKILLs server pid, waits for it to be gone and for the
// supervisor's resumed event, and returns the time from the kill to the
// answer of the next request on the mount (a LOOKUP of a new name).
func killAndResume(t *testing.T, target string, pid int, events <-chan supervisor.Event, tag string) time.Duration {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer func() { _ = unix.Close(pidfd) }()
	killed := time.Now()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
	// Gone (readable pidfd), so the probe below cannot be answered by it.
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 30_000)
		if err == nil && n == 1 {
			break
		}
		if err == nil {
			t.Fatalf("kill %s: process %d still there after 30s", tag, pid)
		} else if !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll pidfd: %v", err)
		}
	}
	gone := time.Since(killed)
	probed := make(chan error, 1)
	var answered time.Time
	go func() {
		_, err := os.Stat(filepath.Join(target, ".probe-"+tag))
		answered = time.Now()
		probed <- err
	}()
	select {
	case ev := <-events:
		if ev.Kind != supervisor.EventResumed {
			t.Fatalf("kill %s: event %+v, want resumed", tag, ev)
		}
		t.Logf("kill %s: process gone %v after the kill; %s", tag, gone.Round(time.Millisecond), ev.Reason)
	case <-time.After(30 * time.Second):
		t.Fatalf("kill %s: no resumed event", tag)
	}
	select {
	case err := <-probed:
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("kill %s: probe stat: %v, want ENOENT", tag, err)
		}
		t.Logf("kill %s: next request answered %v after the kill", tag, answered.Sub(killed).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("kill %s: the mount does not answer after the resume", tag)
	}
	return answered.Sub(killed)
}

func verifyObject(t *testing.T, cl *s3.Client, key string, size int64, sum string) {
	t.Helper()
	out, err := cl.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String(key)})
	if err != nil {
		t.Errorf("bucket: get %s: %v", key, err)
		return
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		t.Errorf("bucket: read %s: %v", key, err)
		return
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sum {
		t.Errorf("bucket: %s has %d bytes (sha256 %s), want %d (%s)", key, n, got, size, sum)
	}
}

// workers is the parent's view of the worker child.
type workers struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // the report stream ended

	mu       sync.Mutex
	ops      map[string]int64
	baseline map[string]int64 // ops when awaitProgress last returned
	errs     []string
	verify   []workerMsg
	finished bool
	changed  chan struct{} // closed and replaced on every report
}

func startWorkers(t *testing.T, target string, abort func(uint32) error, conn uint32) *workers {
	t.Helper()
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeWorkers$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), resumeWorkersEnv+"="+target)
	cmd.ExtraFiles = []*os.File{wr}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = wr.Close()
	w := &workers{cmd: cmd, stdin: stdin, done: make(chan struct{}), ops: map[string]int64{}, baseline: map[string]int64{},
		changed: make(chan struct{})}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			// Stuck on a request nobody answers: release it.
			t.Errorf("worker process does not exit; aborting FUSE connection %d", conn)
			_ = abort(conn)
			<-exited
		}
	})
	go func() {
		defer close(w.done)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var msg workerMsg
			if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
				w.addErr("report: " + err.Error())
				continue
			}
			w.mu.Lock()
			for k, v := range msg.Ops {
				w.ops[k] = v
			}
			if msg.Err != "" {
				w.errs = append(w.errs, msg.Worker+": "+msg.Err)
			}
			if msg.Key != "" {
				w.verify = append(w.verify, msg)
			}
			w.finished = w.finished || msg.Done
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *workers) addErr(e string) {
	w.mu.Lock()
	w.errs = append(w.errs, e)
	w.mu.Unlock()
}

// awaitProgress waits until every worker did an operation (or more, as
// given) since the last call and fails the test at once on a worker's
// error.
func (w *workers) awaitProgress(t *testing.T, timeout time.Duration, more map[string]int64) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		var behind []string
		for _, n := range workerNames {
			if w.ops[n] < w.baseline[n]+max(1, more[n]) {
				behind = append(behind, n)
			}
		}
		errs, ch := slices.Clone(w.errs), w.changed
		if len(behind) == 0 {
			w.baseline = maps(w.ops)
		}
		w.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("workers failed: %s", strings.Join(errs, "; "))
		}
		if len(behind) == 0 {
			return
		}
		select {
		case <-ch:
		case <-w.done:
			t.Fatalf("worker process ended early; no progress of %v", behind)
		case <-deadline:
			t.Fatalf("no progress of %v within %s (ops %v)", behind, timeout, w.snapshot())
		}
	}
}

func maps(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (w *workers) snapshot() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps(w.ops)
}

func (w *workers) errors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.errs)
}

func (w *workers) verifies() []workerMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.verify)
}

// stop tells the workers to finish (stdin closed) and waits for their
// final report.
func (w *workers) stop(t *testing.T, timeout time.Duration) map[string]int64 {
	t.Helper()
	_ = w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(timeout):
		t.Fatalf("workers did not finish within %s (ops %v)", timeout, w.snapshot())
	}
	w.mu.Lock()
	finished := w.finished
	w.mu.Unlock()
	if !finished {
		t.Error("worker process ended without its final report")
	}
	return w.snapshot()
}

// TestResumeWorkers is the worker process of TestResumeUnderLoad; it runs
// only when that test starts it.
func TestResumeWorkers(t *testing.T) {
	target := os.Getenv(resumeWorkersEnv)
	if target == "" {
		t.Skip("the worker process of TestResumeUnderLoad")
	}
	out := os.NewFile(3, "report")
	var outMu sync.Mutex
	send := func(msg workerMsg) {
		b, _ := json.Marshal(msg)
		outMu.Lock()
		_, _ = out.Write(append(b, '\n'))
		outMu.Unlock()
	}
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}

	var opsMu sync.Mutex
	ops := map[string]int64{}
	op := func(name string) { opsMu.Lock(); ops[name]++; opsMu.Unlock() }
	snapshot := func() map[string]int64 { opsMu.Lock(); defer opsMu.Unlock(); return maps(ops) }

	var wg sync.WaitGroup
	for _, name := range workerNames {
		fn := workerFuncs[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := &workerEnv{root: target, op: func() { op(name) }, stopped: stopped,
				fail: func(err error) { send(workerMsg{Worker: name, Err: err.Error()}) },
				verify: func(key string, b []byte) {
					sum := sha256.Sum256(b)
					send(workerMsg{Worker: name, Key: key, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
				}}
			if err := fn(env); err != nil {
				env.fail(err)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			send(workerMsg{Ops: snapshot()})
			continue
		case <-finished:
		}
		break
	}
	send(workerMsg{Ops: snapshot(), Done: true})
}

// workerEnv is what a worker function gets. A worker returns the error
// that ends it; fail reports one it goes on after.
type workerEnv struct {
	root    string
	op      func()
	stopped func() bool
	fail    func(error)
	verify  func(key string, b []byte) // the object key must have content b
}

var workerFuncs = map[string]func(*workerEnv) error{
	"seqwrite":     seqWriteWorker,
	"overwrite":    overwriteWorker,
	"seqread":      seqReadWorker,
	"list":         listWorker,
	"rename":       renameWorker,
	"createunlink": createUnlinkWorker,
	"mmap":         mmapWorker,
}

// seqWriteWorker writes new 64 MiB files in 1 MiB writes (a multipart
// upload is in progress during most kills), closes each and has it
// verified in the bucket.
func seqWriteWorker(e *workerEnv) error {
	if err := os.MkdirAll(filepath.Join(e.root, "seq"), 0o755); err != nil {
		return fmt.Errorf("mkdir seq: %w", err)
	}
	for n := 0; !e.stopped(); n++ {
		name := fmt.Sprintf("seq/big-%d", n)
		data := content(uint64(1000+n), bigWriteSize)
		f, err := os.Create(filepath.Join(e.root, name))
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		for off := 0; off < len(data); off += 1 << 20 {
			if _, err := f.Write(data[off : off+1<<20]); err != nil {
				_ = f.Close()
				return fmt.Errorf("write %s at %d: %w", name, off, err)
			}
			e.op()
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", name, err)
		}
		e.verify(name, data)
	}
	return nil
}

// overwriteWorker keeps one staged file open across every kill and
// overwrites random ranges of it (pwrite), reading ranges back against its
// model now and then and syncing it; at the end the bucket must have the
// model.
func overwriteWorker(e *workerEnv) error {
	const name = "rw/file"
	if err := os.MkdirAll(filepath.Join(e.root, "rw"), 0o755); err != nil {
		return fmt.Errorf("mkdir rw: %w", err)
	}
	model := content(seedRW, rwSize)
	f, err := os.OpenFile(filepath.Join(e.root, name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	if _, err := f.Write(model); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 64<<10)
	for i := 1; !e.stopped(); i++ {
		off := rnd.IntN(rwSize - 1)
		n := 1 + rnd.IntN(min(len(buf), rwSize-off))
		p := buf[:n]
		for j := range p {
			p[j] = byte(i + j)
		}
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			_ = f.Close()
			return fmt.Errorf("pwrite %s at %d+%d: %w", name, off, n, err)
		}
		copy(model[off:], p)
		if i%16 == 0 { // read back a range
			off := rnd.IntN(rwSize - 1)
			n := 1 + rnd.IntN(min(len(buf), rwSize-off))
			if _, err := f.ReadAt(buf[:n], int64(off)); err != nil {
				_ = f.Close()
				return fmt.Errorf("pread %s at %d+%d: %w", name, off, n, err)
			}
			if !bytes.Equal(buf[:n], model[off:off+n]) {
				e.fail(fmt.Errorf("pread %s at %d+%d: content differs from what was written", name, off, n))
			}
		}
		if i%200 == 0 {
			if err := f.Sync(); err != nil {
				_ = f.Close()
				return fmt.Errorf("fsync %s: %w", name, err)
			}
		}
		e.op()
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	e.verify(name, model)
	return nil
}

// dropCache drops the kernel's cached pages of f so that reads reach the
// server.
func dropCache(f *os.File) error {
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", f.Name(), err)
	}
	return nil
}

// seqReadWorker reads a pre-uploaded object sequentially (read-ahead in
// flight) and compares it with its content.
func seqReadWorker(e *workerEnv) error {
	want := content(seedRoBig, roBigSize)
	buf := make([]byte, 1<<20)
	for !e.stopped() {
		f, err := os.Open(filepath.Join(e.root, "ro/big"))
		if err != nil {
			return fmt.Errorf("open ro/big: %w", err)
		}
		if err := dropCache(f); err != nil {
			_ = f.Close()
			return err
		}
		off := 0
		for {
			n, err := io.ReadFull(f, buf)
			if n > 0 && !bytes.Equal(buf[:n], want[off:off+n]) {
				e.fail(fmt.Errorf("read ro/big at %d+%d: content differs", off, n))
			}
			off += n
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					_ = f.Close()
					return fmt.Errorf("read ro/big at %d: %w", off, err)
				}
				break
			}
			e.op()
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close ro/big: %w", err)
		}
		if off != roBigSize {
			e.fail(fmt.Errorf("read ro/big: %d bytes, want %d", off, roBigSize))
		}
	}
	return nil
}

// listWorker lists a directory of listEntries objects.
func listWorker(e *workerEnv) error {
	want := make([]string, listEntries)
	for i := range want {
		want[i] = fmt.Sprintf("e-%03d", i)
	}
	for !e.stopped() {
		ents, err := os.ReadDir(filepath.Join(e.root, "list"))
		if err != nil {
			return fmt.Errorf("readdir list: %w", err)
		}
		got := make([]string, len(ents))
		for i, d := range ents {
			got[i] = d.Name()
		}
		if !slices.Equal(got, want) {
			e.fail(fmt.Errorf("readdir list: %d entries %.200v, want %d", len(got), got, len(want)))
		}
		e.op()
	}
	return nil
}

// renameWorker renames a small file back and forth and checks it after
// every rename.
func renameWorker(e *workerEnv) error {
	dir := filepath.Join(e.root, "ren")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mkdir ren: %w", err)
	}
	data := []byte("the file that moves\n")
	names := [2]string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	if err := os.WriteFile(names[0], data, 0o644); err != nil {
		return fmt.Errorf("write ren/a: %w", err)
	}
	for i := 0; !e.stopped(); i++ {
		from, to := names[i%2], names[(i+1)%2]
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("rename %d %s → %s: %w", i, filepath.Base(from), filepath.Base(to), err)
		}
		b, err := os.ReadFile(to)
		if err != nil {
			return fmt.Errorf("read %s after rename %d: %w", filepath.Base(to), i, err)
		}
		if !bytes.Equal(b, data) {
			e.fail(fmt.Errorf("%s after rename %d has %q", filepath.Base(to), i, b))
		}
		if _, err := os.Stat(from); !errors.Is(err, fs.ErrNotExist) {
			e.fail(fmt.Errorf("stat %s after rename %d: %w, want ENOENT", filepath.Base(from), i, err))
		}
		e.op()
	}
	return nil
}

// createUnlinkWorker creates, writes, reads back and unlinks small files.
func createUnlinkWorker(e *workerEnv) error {
	dir := filepath.Join(e.root, "cu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mkdir cu: %w", err)
	}
	for i := 0; !e.stopped(); i++ {
		p := filepath.Join(dir, fmt.Sprintf("f-%d", i))
		data := bytes.Repeat([]byte{byte(i)}, 1+i%4096)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("create f-%d: %w", i, err)
		}
		if _, err := f.Write(data); err != nil {
			_ = f.Close()
			return fmt.Errorf("write f-%d: %w", i, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close f-%d: %w", i, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read f-%d: %w", i, err)
		}
		if !bytes.Equal(b, data) {
			e.fail(fmt.Errorf("f-%d has %d bytes, not what was written (%d)", i, len(b), len(data)))
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("unlink f-%d: %w", i, err)
		}
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			e.fail(fmt.Errorf("stat f-%d after unlink: %w, want ENOENT", i, err))
		}
		e.op()
	}
	return nil
}

// mmapWorker maps a pre-uploaded object (PROT_READ, MAP_SHARED) and
// compares it page by page.
func mmapWorker(e *workerEnv) error {
	want := content(seedMmap, roMmapSize)
	page := os.Getpagesize()
	for !e.stopped() {
		f, err := os.Open(filepath.Join(e.root, "ro/mm"))
		if err != nil {
			return fmt.Errorf("open ro/mm: %w", err)
		}
		if err := dropCache(f); err != nil {
			_ = f.Close()
			return err
		}
		mem, err := syscall.Mmap(int(f.Fd()), 0, roMmapSize, syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("mmap ro/mm: %w", err)
		}
		for off := 0; off < roMmapSize; off += page {
			if !bytes.Equal(mem[off:off+page], want[off:off+page]) {
				e.fail(fmt.Errorf("mmap ro/mm: page at %d differs", off))
			}
			if off%(64*page) == 0 {
				e.op()
			}
		}
		if err := syscall.Munmap(mem); err != nil {
			e.fail(fmt.Errorf("munmap ro/mm: %w", err))
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close ro/mm: %w", err)
		}
	}
	return nil
}

// holdProxy is a reverse proxy to the S3 server that can hold the first
// request signed with a given access key ID until released, so that a test
// can act while a FUSE server waits for that request.
type holdProxy struct {
	url   string
	mu    sync.Mutex
	ak    string        // hold requests signed with ak
	held  chan struct{} // closed when one is held
	relse chan struct{} // closed to let it go
}

func newHoldProxy(t *testing.T, backend string) *holdProxy {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		ak, held, relse := p.ak, p.held, p.relse
		if ak != "" && strings.Contains(r.Header.Get("Authorization"), "Credential="+ak+"/") {
			p.ak = "" // only the first
			close(held)
		} else {
			relse = nil
		}
		p.mu.Unlock()
		if relse != nil {
			select {
			case <-relse:
			case <-r.Context().Done():
			}
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.url = "http://" + lis.Addr().String()
	return p
}

// arm holds the next request signed with ak; it returns a channel closed
// once one is held and a function that lets it go.
func (p *holdProxy) arm(ak string) (<-chan struct{}, func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ak, p.held, p.relse = ak, make(chan struct{}), make(chan struct{})
	relse := p.relse
	var once sync.Once
	return p.held, func() { once.Do(func() { close(relse) }) }
}

// TestResumeKeySwap kills the FUSE server right after a key swap returned
// applied, and while a swap waits for its check of the new keys against
// S3: the resumed server must use the keys the custody file has (the new
// ones once a swap was applied; the old ones revoked after that) and do
// I/O with them.
func TestResumeKeySwap(t *testing.T) {
	needRoot(t)
	dir, bin, k, s3srv := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	ctx, stopSup := context.WithCancel(context.Background())
	t.Cleanup(stopSup)
	proxy := newHoldProxy(t, s3srv.URL)

	sup, events, info := supervise(ctx, t, m, cfg, supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: proxy.url,
		Bucket: "bkt", Options: "use_path_request_style"}, k)

	// The events of a swap (applied) come before a resumed event; skip them.
	awaitResumed := func(tag string) int {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Kind == supervisor.EventResumed {
					t.Logf("%s: %s", tag, ev.Reason)
					infos, _ := sup.List(ctx)
					if len(infos) != 1 {
						t.Fatalf("%s: %+v", tag, infos)
					}
					return infos[0].PID
				}
				if ev.Kind == supervisor.EventDied {
					t.Fatalf("%s: died: %s", tag, ev.Reason)
				}
			case <-timeout:
				t.Fatalf("%s: no resumed event", tag)
			}
		}
	}
	kill := func(pid int) {
		t.Helper()
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	status := func() string {
		t.Helper()
		c, closer, err := control.Dial(info.ControlSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = closer.Close() }()
		st, err := c.Status(ctx, &credentialsv1.StatusRequest{})
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return st.GetFingerprint()
	}
	swap := func(nk keys.Keys, opts ...grpc.DialOption) (*credentialsv1.SwapResponse, error) {
		c, closer, err := control.Dial(info.ControlSocket, opts...)
		if err != nil {
			return nil, err
		}
		defer func() { _ = closer.Close() }()
		return c.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: nk.AccessKeyID, SecretAccessKey: nk.SecretAccessKey, Source: "secret"})
	}
	// checkIO writes name through the mount and checks it in the bucket with
	// the keys the mount should use (the only ones the bucket still takes).
	checkIO := func(tag, name string, with keys.Keys) {
		t.Helper()
		want := tag + ": written after the resume"
		if err := os.WriteFile(filepath.Join(target, name), []byte(want), 0o644); err != nil {
			t.Fatalf("%s: write: %v", tag, err)
		}
		if got := object(t, s3srv, with, name); got != want {
			t.Fatalf("%s: bucket has %q", tag, got)
		}
		if b, err := os.ReadFile(filepath.Join(target, "before")); err != nil || string(b) != "before" {
			t.Fatalf("%s: read: %q, %v", tag, b, err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "before"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Kill right after a swap.
	k2 := fakes3.NewKeys("AKTWO")
	s3srv.AddKeys(k2)
	resp, err := swap(k2)
	if err != nil || resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		t.Fatalf("swap = %v, %v", resp, err)
	}
	kill(info.PID)
	pid := awaitResumed("kill after a swap")
	s3srv.RevokeKeys(k)
	if got := status(); got != k2.Fingerprint() {
		t.Fatalf("kill after a swap: resumed server uses %s, want the new keys %s", got, k2.Fingerprint())
	}
	checkIO("kill after a swap", "after-swap", k2)

	// Kill during a swap: the server waits for S3 to answer its check of
	// the new keys.
	k3 := fakes3.NewKeys("AKTHREE")
	s3srv.AddKeys(k3)
	held, release := proxy.arm(k3.AccessKeyID)
	defer release()
	type result struct {
		resp *credentialsv1.SwapResponse
		err  error
	}
	swapped := make(chan result, 1)
	// Without the client's retries, so that the answer is the killed server's.
	go func() { r, err := swap(k3, grpc.WithDisableRetry()); swapped <- result{r, err} }()
	select {
	case <-held:
	case r := <-swapped:
		t.Fatalf("swap returned %v, %v before the server checked the new keys", r.resp, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not check the new keys")
	}
	kill(pid)
	release()
	r := <-swapped
	awaitResumed("kill during a swap")
	// The killed server never applied k3 (it was waiting for S3): the
	// resumed server uses k2, and the sidecar's next try applies k3.
	if r.err == nil {
		t.Fatalf("kill during a swap: swap = %v, want an error (the server died)", r.resp)
	}
	if got := status(); got != k2.Fingerprint() {
		t.Fatalf("kill during a swap: resumed server uses %s, want the keys before the swap %s", got, k2.Fingerprint())
	}
	checkIO("kill during a swap (old keys)", "during-swap-old", k2)
	if resp, err := swap(k3); err != nil || resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		t.Fatalf("retried swap = %v, %v", resp, err)
	}
	s3srv.RevokeKeys(k2)
	if got := status(); got != k3.Fingerprint() {
		t.Fatalf("after the swap: server uses %s, want %s", got, k3.Fingerprint())
	}
	checkIO("kill during a swap (retried)", "during-swap-new", k3)
}
