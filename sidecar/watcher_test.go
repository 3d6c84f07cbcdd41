package sidecar

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/internal/atomicwriter"
	"rekey.dev/rekey/internal/keys"
)

// secretRecorder collects what a SecretSource publishes and reports.
type secretRecorder struct {
	mu        sync.Mutex
	published []keys.Keys
	failures  []string
	changed   chan struct{}
}

func newSecretRecorder() *secretRecorder { return &secretRecorder{changed: make(chan struct{}, 100)} }

func (r *secretRecorder) publish(k keys.Keys, _ time.Time) {
	r.mu.Lock()
	r.published = append(r.published, k)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *secretRecorder) fail(reason string) {
	r.mu.Lock()
	r.failures = append(r.failures, reason)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *secretRecorder) snapshot() ([]keys.Keys, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]keys.Keys(nil), r.published...), append([]string(nil), r.failures...)
}

// waitFor waits until cond holds on the recorded values.
func (r *secretRecorder) waitFor(t *testing.T, what string, cond func([]keys.Keys, []string) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if cond(r.snapshot()) {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			p, f := r.snapshot()
			t.Fatalf("timed out waiting for %s; published %v, failures %q", what, p, f)
		}
	}
}

// startSecretWatch watches dir the way Run does and returns the recorder.
func startSecretWatch(t *testing.T, dir string) *secretRecorder {
	t.Helper()
	rec := newSecretRecorder()
	ss := &SecretSource{Dir: dir, Publish: rec.publish, Fail: rec.fail, Log: testr.New(t)}
	w := &DirWatcher{Dir: dir, Debounce: 10 * time.Millisecond, Poll: time.Hour, OnChange: ss.Check, Log: testr.New(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	return rec
}

func pair(id, secret string) map[string]string {
	return map[string]string{"akId": id, "akSecret": secret}
}

func lastID(p []keys.Keys) string {
	if len(p) == 0 {
		return ""
	}
	return p[len(p)-1].AccessKeyID
}

func TestSecretWatcherAtomicWriter(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicwriter.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteStrings(pair("AK0", "S0")); err != nil {
		t.Fatal(err)
	}
	rec := startSecretWatch(t, dir)
	rec.waitFor(t, "initial keys", func(p []keys.Keys, _ []string) bool { return lastID(p) == "AK0" })

	t.Run("rapid successive updates end on the last set, always complete", func(t *testing.T) {
		for i := 1; i <= 50; i++ {
			if err := w.WriteStrings(pair("AK"+itoa(i), "S"+itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		rec.waitFor(t, "AK50", func(p []keys.Keys, _ []string) bool { return lastID(p) == "AK50" })
		p, f := rec.snapshot()
		for _, k := range p {
			if strings.TrimPrefix(k.AccessKeyID, "AK") != strings.TrimPrefix(k.SecretAccessKey, "S") {
				t.Errorf("published a mixed set: %s with secret of another generation", k.AccessKeyID)
			}
		}
		if len(f) != 0 {
			t.Errorf("failures during updates: %q", f)
		}
		if len(p) > 51 {
			t.Errorf("%d publishes for 51 sets", len(p))
		}
	})

	t.Run("nothing before the swap", func(t *testing.T) {
		before, _ := rec.snapshot()
		w.BeforeSwap = func(string) {
			// The new timestamped directory is complete but not visible:
			// give the watcher time to (wrongly) act on its creation.
			time.Sleep(100 * time.Millisecond)
			if p, _ := rec.snapshot(); len(p) != len(before) {
				t.Errorf("published %s before ..data was swapped", lastID(p))
			}
		}
		defer func() { w.BeforeSwap = nil }()
		if err := w.WriteStrings(pair("AKSWAP", "SSWAP")); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "AKSWAP", func(p []keys.Keys, _ []string) bool { return lastID(p) == "AKSWAP" })
	})

	t.Run("unchanged content is skipped", func(t *testing.T) {
		before, _ := rec.snapshot()
		// Same keys plus an entry the sidecar does not read: kubelet swaps
		// ..data, the key set is identical.
		data := pair("AKSWAP", "SSWAP")
		data["endpoint"] = "http://example"
		if err := w.WriteStrings(data); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if p, f := rec.snapshot(); len(p) != len(before) || len(f) != 0 {
			t.Errorf("unchanged keys published again: %v, failures %q", p[len(before):], f)
		}
	})

	t.Run("incomplete set is reported, not published", func(t *testing.T) {
		before, _ := rec.snapshot()
		if err := w.WriteStrings(map[string]string{"akId": "AKHALF"}); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "a failure", func(_ []keys.Keys, f []string) bool { return len(f) == 1 })
		p, f := rec.snapshot()
		if len(p) != len(before) {
			t.Errorf("incomplete set published: %v", p[len(before):])
		}
		if !strings.Contains(f[0], "secret access key is empty") {
			t.Errorf("failure = %q", f[0])
		}
		// The deleted file comes back: the complete set is published.
		if err := w.WriteStrings(pair("AKBACK", "SBACK")); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "AKBACK", func(p []keys.Keys, _ []string) bool { return lastID(p) == "AKBACK" })
	})

	t.Run("every alias of the contract", func(t *testing.T) {
		for _, data := range []map[string]string{
			{"accessKeyID": "AKCSI", "secretAccessKey": "SCSI"},
			{"AccessKeyId": "AKSTS", "AccessKeySecret": "SSTS", "SecurityToken": "TOK", "Expiration": "2030-01-01T00:00:00Z"},
		} {
			if err := w.WriteStrings(data); err != nil {
				t.Fatal(err)
			}
			want := data["accessKeyID"] + data["AccessKeyId"]
			rec.waitFor(t, want, func(p []keys.Keys, _ []string) bool { return lastID(p) == want })
		}
		p, _ := rec.snapshot()
		if k := p[len(p)-1]; k.SessionToken != "TOK" || k.Expiration.Year() != 2030 {
			t.Errorf("STS-style secret parsed as %s, expiration %v", k, k.Expiration)
		}
	})
}

func TestSecretWatcherDirectoryReplaced(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "secret")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, _ := atomicwriter.New(dir)
	if err := w.WriteStrings(pair("AK1", "S1")); err != nil {
		t.Fatal(err)
	}
	rec := startSecretWatch(t, dir)
	rec.waitFor(t, "AK1", func(p []keys.Keys, _ []string) bool { return lastID(p) == "AK1" })

	// The whole volume goes away (a remount) and comes back.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "a failure", func(_ []keys.Keys, f []string) bool { return len(f) > 0 })
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, _ = atomicwriter.New(dir)
	if err := w.WriteStrings(pair("AK2", "S2")); err != nil {
		t.Fatal(err)
	}
	// The watch on the old inode is gone; the next event or poll must find
	// the new directory. Nudge with another update after a moment.
	time.Sleep(50 * time.Millisecond)
	if err := w.WriteStrings(pair("AK3", "S3")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "AK2 or AK3", func(p []keys.Keys, _ []string) bool { return lastID(p) == "AK3" || lastID(p) == "AK2" })
}

func TestReadSecretDirPlainFiles(t *testing.T) {
	dir := t.TempDir()
	for n, v := range map[string]string{"accessKeyID": "AK\n", "secretAccessKey": "SK\n", "unrelated": "x"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data, err := ReadSecretDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 2 || data["accessKeyID"] != "AK\n" {
		t.Errorf("data = %v", data)
	}
	if _, err := ReadSecretDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing directory read without error")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
