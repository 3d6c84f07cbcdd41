// Package loadcheck drives a verified read/write load through a mounted
// directory while keys rotate, and counts what went wrong. Every file a
// worker writes is read back and compared by SHA-256, so a lost or corrupted
// byte shows up as a mismatch, and every failed system call as a failure.
// The demo, the rotation-under-load test and the benchmarks share it.
package loadcheck

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

// maxErrors bounds the failure messages kept for the report.
const maxErrors = 20

// Stats counts a load's operations.
type Stats struct {
	Ops        atomic.Int64 // completed write+verify or read+verify cycles, and listings
	Failed     atomic.Int64 // operations that returned an error
	Mismatched atomic.Int64 // bytes read back that differ from what was written
	Bytes      atomic.Int64 // bytes written and verified

	mu     sync.Mutex
	errors []string
}

func (s *Stats) fail(format string, a ...any) {
	s.Failed.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errors) < maxErrors {
		s.errors = append(s.errors, fmt.Sprintf(format, a...))
	}
}

// Errors returns the first failure messages.
func (s *Stats) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errors)
}

// Load describes the workers.
type Load struct {
	Dir         string // the mounted directory to work in
	Workers     int    // concurrent workers (default 4)
	MaxFileSize int    // largest file written (default 256 KiB)
	// Metadata adds chmod and utimens of files written earlier, each
	// checked with a stat right after (metadata-only changes, which a
	// rekey mount makes with server-side copies).
	Metadata bool
}

// Run starts the workers and blocks until ctx ends and every worker finished
// its current operation. Each worker writes a file, closes it, reads it back
// and compares; rewrites files it wrote earlier; re-reads older files;
// lists the directory now and then; and, with Metadata, changes the mode
// and mtime of older files.
func (l Load) Run(ctx context.Context, st *Stats) {
	if l.Workers <= 0 {
		l.Workers = 4
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = 256 << 10
	}
	var wg sync.WaitGroup
	for w := 0; w < l.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, w, st)
		}()
	}
	wg.Wait()
}

func (l Load) worker(ctx context.Context, id int, st *Stats) {
	dir := filepath.Join(l.Dir, fmt.Sprintf("worker-%d", id))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		st.fail("worker %d: mkdir: %v", id, err)
		return
	}
	written := map[string][32]byte{}
	for i := 0; ctx.Err() == nil; i++ {
		switch {
		case i%10 == 9:
			ents, err := os.ReadDir(dir)
			if err != nil {
				st.fail("worker %d: readdir: %v", id, err)
				continue
			}
			if len(ents) < len(written) {
				st.fail("worker %d: readdir shows %d files, %d were written", id, len(ents), len(written))
				continue
			}
			st.Ops.Add(1)
		case l.Metadata && i%10 == 7 && len(written) > 0:
			l.changeMeta(id, i, st, filepath.Join(dir, pick(written)))
		case i%5 == 4 && len(written) > 0:
			// Re-read a file written earlier, through a fresh open.
			name := pick(written)
			l.verify(id, st, filepath.Join(dir, name), written[name])
		default:
			name := fmt.Sprintf("f-%d", i%16) // rewrites after 16 files
			data := make([]byte, 1+mrand.IntN(l.MaxFileSize))
			_, _ = rand.Read(data)
			path := filepath.Join(dir, name)
			if err := writeFile(path, data); err != nil {
				st.fail("worker %d: write %s: %v", id, name, err)
				delete(written, name) // content unknown now
				continue
			}
			sum := sha256.Sum256(data)
			written[name] = sum
			if l.verify(id, st, path, sum) {
				st.Bytes.Add(int64(len(data)))
			}
		}
	}
}

// changeMeta sets a mode and an mtime on path and checks that a stat shows
// them; it counts one operation.
func (l Load) changeMeta(id, i int, st *Stats, path string) {
	mode := os.FileMode(0o600 | (i/10%2)*0o040)
	mtime := time.Unix(1_000_000_000+int64(i), 0)
	if err := os.Chmod(path, mode); err != nil {
		st.fail("worker %d: chmod %s: %v", id, filepath.Base(path), err)
		return
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		st.fail("worker %d: utimens %s: %v", id, filepath.Base(path), err)
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		st.fail("worker %d: stat %s: %v", id, filepath.Base(path), err)
		return
	}
	if fi.Mode().Perm() != mode || !fi.ModTime().Equal(mtime) {
		st.fail("worker %d: %s shows mode %v mtime %v after chmod %v and utimens %v", id, filepath.Base(path), fi.Mode().Perm(), fi.ModTime(), mode, mtime)
		return
	}
	st.Ops.Add(1)
}

// verify reads path and compares it with want; it counts one operation.
func (l Load) verify(id int, st *Stats, path string, want [32]byte) bool {
	got, err := os.ReadFile(path)
	if err != nil {
		st.fail("worker %d: read %s: %v", id, filepath.Base(path), err)
		return false
	}
	if sha256.Sum256(got) != want {
		st.Mismatched.Add(int64(len(got)))
		st.fail("worker %d: %s: content differs from what was written (%d bytes read)", id, filepath.Base(path), len(got))
		return false
	}
	st.Ops.Add(1)
	return true
}

// writeFile writes data and reports errors of write, fsync and close: the
// last two are where an upload failure surfaces.
func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if mrand.IntN(2) == 0 {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

func pick(m map[string][32]byte) string {
	n := mrand.IntN(len(m))
	for k := range m {
		if n == 0 {
			return k
		}
		n--
	}
	return ""
}

// SwapFunc delivers new keys with a generation to the FUSE server and
// returns an error unless they were applied.
type SwapFunc func(ctx context.Context, k keys.Keys, generation uint64) error

// KeyIssuer creates and revokes keys on an S3 server, the way an operator
// does with the server's admin API (`mc admin user add/remove`, `versitygw
// admin create-user/delete-user`).
type KeyIssuer interface {
	// Issue creates new keys with access to the bucket and returns them once
	// the server accepts them.
	Issue(ctx context.Context) (keys.Keys, error)
	// Revoke makes the server refuse k from now on.
	Revoke(ctx context.Context, k keys.Keys) error
}

// Rotator rotates keys the way an operator does: create a new key on the
// server, hand it to the FUSE server, revoke the old key at once. The keys
// are made by Keys, or, if it is nil, on the in-process Server.
type Rotator struct {
	Server  *fakes3.Server
	Keys    KeyIssuer
	Swap    SwapFunc
	Current keys.Keys
	gen     uint64
}

// Rotate performs one rotation and returns how long the swap took.
func (r *Rotator) Rotate(ctx context.Context) (time.Duration, error) {
	issuer := r.Keys
	if issuer == nil {
		issuer = fakeIssuer{r.Server}
	}
	next, err := issuer.Issue(ctx)
	if err != nil {
		return 0, fmt.Errorf("issue keys: %w", err)
	}
	r.gen++
	start := time.Now()
	if err := r.Swap(ctx, next, r.gen); err != nil {
		_ = issuer.Revoke(context.WithoutCancel(ctx), next)
		return 0, err
	}
	took := time.Since(start)
	old := r.Current
	r.Current = next
	if err := issuer.Revoke(ctx, old); err != nil {
		return took, fmt.Errorf("revoke old keys: %w", err)
	}
	return took, nil
}

// fakeIssuer issues keys on the in-process S3 server.
type fakeIssuer struct{ s *fakes3.Server }

func (f fakeIssuer) Issue(context.Context) (keys.Keys, error) {
	k := fakes3.NewKeys("AKROT")
	f.s.AddKeys(k)
	return k, nil
}

func (f fakeIssuer) Revoke(_ context.Context, k keys.Keys) error {
	f.s.RevokeKeys(k)
	return nil
}

// Percentile returns the p-th percentile (0-100) of ds by nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	idx := int(math.Ceil(float64(len(s))*p/100)) - 1
	idx = max(0, min(idx, len(s)-1))
	return s[idx]
}
