//go:build integration

package s3fssuite

import (
	"bufio"
	"bytes"
	"context"
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

	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/fusetest/rekeyfuse"
)

// s3fsBucket is the bucket of the s3fs mount; rekey mounts fusetest.Bucket.
const s3fsBucket = "s3fs-suite"

// result is one test's outcome on one mount.
type result struct {
	pass    bool
	seconds string
	log     string // the test's output, for a failure
}

// needS3fs skips (fails under CI=true) without root or s3fs.
func needS3fs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	if _, err := exec.LookPath("s3fs"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("s3fs is not installed (apt-get install -y s3fs)")
		}
		t.Skip("s3fs is not installed (apt-get install -y s3fs)")
	}
}

func TestS3fsSuite(t *testing.T) {
	needS3fs(t)
	suite := fusetest.Binary(t, "REKEY_S3FS_SUITE_DIR", "tests/s3fs-suite/build.sh")
	known, err := readKnown("../s3fs-suite/rekey-known-failures.txt")
	if err != nil {
		t.Fatal(err)
	}
	srv := fusetest.StartMinIO(t)
	if _, err := srv.Client(srv.Admin).CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(s3fsBucket)}); err != nil {
		t.Fatal(err)
	}

	s3fs := mountS3fs(t, srv, s3fsBucket)
	rekeyMP := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(rekeyMP, 0o755); err != nil {
		t.Fatal(err)
	}
	// The suite's stat cache: one second, as start_s3fs sets it.
	rekeyfuse.RunWith(t, srv, srv.Admin, rekeyfuse.Options{MountOptions: "stat_cache_expire=1", Mountpoint: rekeyMP})

	runner := filepath.Join(suite, "run-suite.sh")
	env := func(bucket string, pid int) []string {

		return append(os.Environ(), "S3_URL="+srv.URL, "S3_ENDPOINT="+fakes3.Region, "TEST_BUCKET_1="+bucket,
			"AWS_ACCESS_KEY_ID="+srv.Admin.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+srv.Admin.SecretAccessKey,
			fmt.Sprintf("S3FS_PID=%d", pid))
	}
	// The tests are those add_all_tests adds for this s3fs mount; rekey
	// runs the same list.
	list := exec.Command(runner, "list", s3fs.mp)
	list.Env = env(s3fsBucket, s3fs.cmd.Process.Pid)
	out, err := fusetest.ForkSafe(list).Output()
	if err != nil {
		t.Fatalf("list the suite's tests: %v", err)
	}
	tests := strings.Fields(string(out))
	if only := os.Getenv("S3FS_SUITE_TESTS"); only != "" {
		tests = strings.Split(only, ",")
	}

	start := time.Now()
	var wg sync.WaitGroup
	var s3fsRes, rekeyRes map[string]result
	wg.Go(func() {
		s3fsRes = runSuite(t, runner, s3fs.mp, func() []string { return env(s3fsBucket, s3fs.pid()) }, s3fs.ensure, tests)
	})
	wg.Go(func() {
		rekeyRes = runSuite(t, runner, rekeyMP, func() []string { return env(fusetest.Bucket, os.Getpid()) },
			func() error { return nil }, tests)
	})
	wg.Wait()
	elapsed := time.Since(start).Round(time.Second)
	if s3fs.restarts > 0 {
		t.Logf("s3fs crashed and was mounted again %d times", s3fs.restarts)
	}

	table := renderTable(tests, rekeyRes, s3fsRes, known)
	t.Logf("s3fs-fuse integration suite, %d tests, on MinIO (%s):\n%s", len(tests), elapsed, table)
	if p := os.Getenv("REKEY_S3FS_SUITE_TABLE"); p != "" {
		if err := os.WriteFile(p, []byte(table), 0o644); err != nil { //nolint:gosec // a report for docs/
			t.Error(err)
		}
	}
	for _, name := range tests {
		r, s := rekeyRes[name], s3fsRes[name]
		switch {
		case s.pass && !r.pass && known[name] == "":
			t.Errorf("%s: s3fs passes, rekey fails:\n%s", name, tail(r.log, 40))
		case r.pass && known[name] != "":
			t.Logf("%s passes now: drop it from rekey-known-failures.txt", name)
		}
	}
}

// s3fsMount is an s3fs process serving s3fsBucket on mp, mounted as
// start_s3fs in integration-test-common.sh mounts it (-o sigv4, the flag of
// the default run), less the options s3fs 1.90 does not have
// (enable_unsigned_payload, insecure_logging; its name for region is
// endpoint). A test that crashes s3fs 1.90 would fail every test after it;
// restart mounts it again, as each test of the suite had its own mount.
type s3fsMount struct {
	mu       sync.Mutex // held by ensure
	srv      *fusetest.Server
	bucket   string
	mp       string
	passwd   string
	cmd      *exec.Cmd
	done     chan struct{}
	logs     *fusetest.LockedBuffer
	restarts int
}

func mountS3fs(t *testing.T, srv *fusetest.Server, bucket string) *s3fsMount {
	t.Helper()
	dir := t.TempDir()
	m := &s3fsMount{srv: srv, bucket: bucket, mp: filepath.Join(dir, "mnt"), passwd: filepath.Join(dir, "passwd-s3fs")}
	if err := os.Mkdir(m.mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.passwd, []byte(srv.Admin.AccessKeyID+":"+srv.Admin.SecretAccessKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.stop)
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *s3fsMount) start() error {
	m.logs = &fusetest.LockedBuffer{}
	m.cmd = exec.Command("s3fs", m.bucket, m.mp, "-f", "-o", "use_path_request_style", "-o", "url="+m.srv.URL,
		"-o", "endpoint="+fakes3.Region, "-o", "use_xattr=1", "-o", "passwd_file="+m.passwd,
		"-o", "stat_cache_expire=1", "-o", "stat_cache_interval_expire=1", "-o", "dbglevel=err", "-o", "retries=3",
		"-o", "sigv4")
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if err := fusetest.ForkSafe(m.cmd).Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	m.done = done
	go func(c *exec.Cmd) { _ = c.Wait(); close(done) }(m.cmd)
	deadline := time.Now().Add(20 * time.Second)
	for !mounted(m.mp) {
		if time.Now().After(deadline) {
			return fmt.Errorf("s3fs did not mount:\n%s", m.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// alive reports whether s3fs still serves the mount.
func (m *s3fsMount) alive() bool {
	select {
	case <-m.done:
		return false
	default:
		return mounted(m.mp)
	}
}

func (m *s3fsMount) stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	_ = syscall.Unmount(m.mp, syscall.MNT_DETACH)
}

// ensure mounts s3fs again if it died.
func (m *s3fsMount) ensure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.alive() {
		return nil
	}
	m.stop()
	m.restarts++
	return m.start()
}

func (m *s3fsMount) pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd.Process.Pid
}

func mounted(mp string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	return err == nil && bytes.Contains(b, []byte(" "+mp+" "))
}

// runSuite runs tests on the mount at mp, each in a fresh directory of its
// own, calling ensure before each (which remounts a mount that died), and
// returns their results. pjdfstest's tests (the slow ones) run one after
// another beside the others, which run one after another too.
func runSuite(t *testing.T, runner, mp string, env func() []string, ensure func() error, tests []string) map[string]result {
	var pjd, rest []string
	for _, name := range tests {
		if strings.HasPrefix(name, "test_pjdfstest_") {
			pjd = append(pjd, name)
		} else {
			rest = append(rest, name)
		}
	}
	var mu sync.Mutex
	res := map[string]result{}
	var wg sync.WaitGroup
	for _, group := range [][]string{pjd, rest} {
		wg.Go(func() {
			for name, r := range runTests(t, runner, mp, env, ensure, group) {
				mu.Lock()
				res[name] = r
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return res
}

// runTests runs tests one after another.
func runTests(t *testing.T, runner, mp string, env func() []string, ensure func() error, tests []string) map[string]result {
	logs, tmp := t.TempDir(), t.TempDir() // the suite keeps its big files in TMPDIR
	res := map[string]result{}
	for _, name := range tests {
		if err := ensure(); err != nil {
			t.Errorf("%s: remount before %s: %v", mp, name, err)
			return res
		}
		cmd := exec.CommandContext(context.Background(), runner, "run", mp, name)
		cmd.Env = append(env(), "S3FS_SUITE_LOGS="+logs, "S3FS_SUITE_TIMEOUT=300", "TMPDIR="+tmp)
		var stderr fusetest.LockedBuffer
		cmd.Stderr = &stderr
		out, err := fusetest.ForkSafe(cmd).Output()
		if err != nil {
			t.Logf("run-suite.sh %s on %s: %v\n%s", name, mp, err, stderr.String())
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			if len(f) != 4 || f[0] != "RESULT" || f[1] != name {
				continue
			}
			log, _ := os.ReadFile(filepath.Join(logs, f[1]+".log")) //nolint:gosec // our own log directory
			res[f[1]] = result{pass: f[2] == "pass", seconds: f[3], log: string(log)}
		}
	}
	return res
}

// readKnown reads the known-failures list: "test_name  reason" lines,
// # comments.
func readKnown(path string) (map[string]string, error) {
	b, err := os.ReadFile(path) //nolint:gosec // a file of this repository
	if err != nil {
		return nil, fmt.Errorf("read known failures: %w", err)
	}
	known := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, _ := strings.Cut(line, " ")
		known[name] = strings.TrimSpace(reason)
		if known[name] == "" {
			return nil, fmt.Errorf("%s: %s has no reason", path, name)
		}
	}
	return known, nil
}

// renderTable is the Markdown table of both tools' results, with the
// totals and, for a test rekey fails, the reason listed or the last line
// of its output.
func renderTable(tests []string, rekey, s3fs map[string]result, known map[string]string) string {
	var b strings.Builder
	word := func(r result, ok bool) string {
		switch {
		case !ok:
			return "not run"
		case r.pass:
			return "pass"
		default:
			return "FAIL"
		}
	}
	count := func(m map[string]result) (p int) {
		for _, r := range m {
			if r.pass {
				p++
			}
		}
		return p
	}
	fmt.Fprintf(&b, "| test | rekey | s3fs 1.90 | note |\n|---|---|---|---|\n")
	for _, name := range tests {
		r, rok := rekey[name]
		s, sok := s3fs[name]
		note := ""
		if rok && !r.pass {
			note = known[name]
			if note == "" {
				note = lastLine(r.log)
			}
		}
		if sok && !s.pass && (!rok || r.pass) {
			note = "s3fs: " + lastLine(s.log)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, word(r, rok), word(s, sok), strings.ReplaceAll(note, "|", "/"))
	}
	fmt.Fprintf(&b, "| **total** | **%d pass / %d fail** | **%d pass / %d fail** | |\n",
		count(rekey), len(tests)-count(rekey), count(s3fs), len(tests)-count(s3fs))
	return b.String()
}

func lastLine(s string) string {
	lines := slices.DeleteFunc(strings.Split(s, "\n"), func(l string) bool { return strings.TrimSpace(l) == "" })
	if len(lines) == 0 {
		return ""
	}
	l := lines[len(lines)-1]
	if len(l) > 120 {
		l = l[:120] + "…"
	}
	return l
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
