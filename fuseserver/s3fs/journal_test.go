package s3fs

import (
	"bufio"
	"bytes"
	"fmt"
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
	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/fuseserver/journal"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
)

// Environment of the child process of TestRecoverAfterKill.
const (
	childEnv        = "REKEY_S3FS_RECOVERY_CHILD"
	childURLEnv     = "REKEY_S3FS_CHILD_URL"
	childStagingEnv = "REKEY_S3FS_CHILD_STAGING"
	childMountEnv   = "REKEY_S3FS_CHILD_MOUNT"
	childKeysEnv    = "REKEY_S3FS_CHILD_KEYS" // a 0600 keys file
)

// recoveryOptions are the options of both processes: streams start above
// 5 MiB in parts of 5 MiB.
func recoveryOptions(staging string) Options {
	return Options{Bucket: testBucket, StagingDir: staging, MultipartThreshold: MinPartSize, PartSize: MinPartSize}
}

// TestRecoveryChild is the FUSE server of TestRecoverAfterKill, run in a
// child process that the parent SIGKILLs: no FlushAll, no Close.
func TestRecoveryChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("the child process of TestRecoverAfterKill")
	}
	k, err := keys.ReadFile(os.Getenv(childKeysEnv))
	if err != nil {
		t.Fatal(err)
	}
	api := (&fusetest.Server{URL: os.Getenv(childURLEnv)}).Client(k)
	fsys, err := New(api, recoveryOptions(os.Getenv(childStagingEnv)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(os.Getenv(childMountEnv), fsys, false); err != nil {
		t.Fatal(err)
	}
	fmt.Println("serving")
	select {} // until SIGKILL
}

// killableServer is a FUSE server in a child process.
type killableServer struct {
	cmd *exec.Cmd
	dir string
}

func startChildServer(t *testing.T, url, staging string, k keys.Keys) *killableServer {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	var b bytes.Buffer
	if err := keys.Encode(&b, k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecoveryChild$", "-test.count=1") //nolint:gosec // the test binary itself
	cmd.Env = append(os.Environ(), childEnv+"=1", childURLEnv+"="+url, childStagingEnv+"="+staging,
		childMountEnv+"="+dir, childKeysEnv+"="+keyFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errs := &fusetest.LockedBuffer{}
	cmd.Stderr = errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ks := &killableServer{cmd: cmd, dir: dir}
	t.Cleanup(ks.kill)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "serving" {
				close(ready)
				break
			}
		}
		for sc.Scan() { // drain
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("child FUSE server not serving\n%s", errs)
	}
	return ks
}

// kill SIGKILLs the server and detaches its dead mount.
func (ks *killableServer) kill() {
	if ks.cmd.ProcessState == nil {
		_ = ks.cmd.Process.Kill()
		_ = ks.cmd.Wait()
	}
	_ = syscall.Unmount(ks.dir, syscall.MNT_DETACH)
}

// recordOf returns the journal entry of key in dir.
func recordOf(t *testing.T, dir, key string) (journal.Entry, bool) {
	t.Helper()
	entries, _, err := journal.Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.HasRecord && e.Err == nil && e.Record.Key == key {
			return e, true
		}
	}
	return journal.Entry{}, false
}

// TestRecoverAfterKill writes through a real mount served by a child
// process, SIGKILLs it (no final upload), and starts a new FS on the same
// staging directory: every byte of the dirty files reaches the bucket,
// including a streamed multipart upload killed half way, after parts were
// released from staging. An object another client changed meanwhile, a
// streamed upload whose server-side upload is gone, a staging file without
// a record (0.1) and a record of an unknown version are kept on disk and
// reported, never deleted.
func TestRecoverAfterKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	bucket := fusetest.StartFake(t)
	fsKeys := fakes3.NewKeys("FS")
	bucket.Fake().AddKeys(fsKeys)
	admin := bucket.Client(bucket.Admin)
	staging := filepath.Join(t.TempDir(), "staging")
	bucket.Put(t, "existing.txt", []byte("0123456789 original content"))
	bucket.Put(t, "conflict.txt", []byte("before"))

	child := startChildServer(t, bucket.URL, staging, fsKeys)
	path := func(name string) string { return filepath.Join(child.dir, name) }
	want := map[string][]byte{}
	var open []*os.File
	t.Cleanup(func() {
		for _, f := range open {
			_ = f.Close()
		}
	})
	// write leaves name open with data, so nothing flushes it.
	write := func(name string, data []byte, flag int, off int64) {
		t.Helper()
		f, err := os.OpenFile(path(name), flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, f)
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	small := randomBytes(t, 100<<10)
	write("dir/small.bin", small, os.O_CREATE|os.O_RDWR, 0)
	want["dir/small.bin"] = small
	write("existing.txt", []byte("ABCDEFGHIJ"), os.O_RDWR, 0)
	want["existing.txt"] = []byte("ABCDEFGHIJ original content")
	write("conflict.txt", []byte("mine"), os.O_RDWR, 0)
	write("empty.txt", nil, os.O_CREATE|os.O_RDWR, 0)
	want["empty.txt"] = []byte{}

	// Two streamed files, written sequentially until the upload released
	// parts from staging (their record names the acknowledged parts).
	streamed := func(name string, size int) []byte {
		t.Helper()
		data := randomBytes(t, size)
		f, err := os.Create(path(name))
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, f)
		for off := 0; off < len(data); off += 1 << 20 {
			if _, err := f.Write(data[off:min(off+1<<20, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		// Acknowledged parts are released (and recorded first) on the
		// next write: rewrite the last byte until two are.
		eventually(t, 20*time.Second, name+": parts recorded as acknowledged", func() bool {
			if _, err := f.WriteAt(data[len(data)-1:], int64(len(data)-1)); err != nil {
				t.Fatal(err)
			}
			e, ok := recordOf(t, staging, name)
			return ok && e.Record.Multipart != nil && len(e.Record.Multipart.Acknowledged) >= 2
		})
		return data
	}
	want["big.bin"] = streamed("big.bin", 23<<20+12345)
	gone := streamed("gone.bin", 18<<20)

	// Every dirty file has a dirty record before the server dies.
	for _, key := range []string{"dir/small.bin", "existing.txt", "conflict.txt", "empty.txt", "big.bin", "gone.bin"} {
		if e, ok := recordOf(t, staging, key); !ok || e.Record.State != journal.StateDirty {
			t.Fatalf("record of %s: %+v, %v; want dirty", key, e, ok)
		}
	}
	child.kill()

	// Meanwhile: another client overwrites conflict.txt, the upload of
	// gone.bin is aborted (a lifecycle rule, say), a 0.1 server left a
	// staging file, and a newer rekey left a record this one cannot read.
	bucket.Put(t, "conflict.txt", []byte("someone else's"))
	e, _ := recordOf(t, staging, "gone.bin")
	if _, err := admin.AbortMultipartUpload(t.Context(), &s3.AbortMultipartUploadInput{Bucket: aws.String(testBucket),
		Key: aws.String("gone.bin"), UploadId: aws.String(e.Record.Multipart.UploadID)}); err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(staging, "stage-123456789")
	future := filepath.Join(staging, "stage-00000000000000ff")
	for p, data := range map[string]string{legacy: "legacy data", future: "future data",
		future + journal.RecordSuffix: `{"version":99,"bucket":"bucket","key":"future.bin"}`} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A new server on the same staging directory.
	var (
		mu       sync.Mutex
		reported []Retained
	)
	opts := recoveryOptions(staging)
	opts.OnRetained = func(rs []Retained) { mu.Lock(); reported = append(reported, rs...); mu.Unlock() }
	if testing.Verbose() {
		opts.Logger = testr.New(t)
	}
	fsys, err := New(bucket.Client(fsKeys), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fsys.Close() })
	if st := fsys.recovered("big.bin"); st == nil {
		t.Error("recovered(big.bin) = nil, want the recovered state")
	}
	for key, data := range want {
		eventually(t, 30*time.Second, key+" in the bucket", func() bool {
			got, err := bucket.Get(t, key)
			return err == nil && bytes.Equal(got, data)
		})
	}
	reportedKeys := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var ks []string
		for _, r := range reported {
			ks = append(ks, r.Key)
		}
		slices.Sort(ks)
		return ks
	}
	wantKept := []string{"conflict.txt", "gone.bin", "stage-00000000000000ff (unreadable record)", "stage-123456789 (no record)"}
	eventually(t, 30*time.Second, fmt.Sprintf("reported %v", wantKept), func() bool { return slices.Equal(reportedKeys(), wantKept) })
	eventually(t, 10*time.Second, "nothing pending", func() bool { return len(fsys.Pending()) == 0 })
	if got := bucket.MustGet(t, "conflict.txt"); string(got) != "someone else's" {
		t.Errorf("conflict.txt = %q: recovery overwrote another client's object", got)
	}
	bucket.AssertAbsent(t, "gone.bin")

	// What was reported is on disk as it was; the uploaded data is gone
	// or recorded as uploaded (the write cache may keep a clean copy).
	entries, _, err := journal.Scan(staging)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		if e.Removable() {
			continue
		}
		left = append(left, e.Describe())
		if !e.HasData {
			t.Errorf("%s: data removed, record left", e.Name)
		}
	}
	slices.Sort(left)
	if !slices.Equal(left, wantKept) {
		t.Errorf("staging holds %v, want %v", left, wantKept)
	}
	if b, err := os.ReadFile(legacy); err != nil || string(b) != "legacy data" {
		t.Errorf("legacy staging file: %q, %v", b, err)
	}
	if b, err := os.ReadFile(future + journal.RecordSuffix); err != nil || !strings.Contains(string(b), `"version":99`) {
		t.Errorf("record of an unknown version: %q, %v", b, err)
	}
	if e, ok := recordOf(t, staging, "conflict.txt"); !ok || e.DataSize != int64(len("minere")) {
		t.Errorf("conflict.txt staging: %+v", e)
	}
	if e, ok := recordOf(t, staging, "gone.bin"); !ok || e.DataSize != int64(len(gone)) {
		t.Errorf("gone.bin staging: %+v", e)
	} else {
		// The bytes that are still on the node are those of the parts
		// the record does not list as acknowledged.
		acked := e.Record.Multipart.Acknowledged
		first := int64(acked[len(acked)-1].Number) * e.Record.Multipart.PartSize
		b, err := os.ReadFile(e.DataPath)
		if err != nil || !bytes.Equal(b[first:], gone[first:]) {
			t.Errorf("gone.bin: the unacknowledged tail differs from what was written (%v)", err)
		}
	}
}
