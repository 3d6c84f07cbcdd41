package sidecar

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// dataDirName is the symlink kubelet's AtomicWriter swaps on every update
// of a projected volume.
const dataDirName = "..data"

// maxKeyFileSize bounds what is read of one Secret entry: the largest valid
// key field (keys.MaxTokenLen) with room to spare.
const maxKeyFileSize = 64 << 10

// ErrSecretChanging is returned by ReadSecretDir when the directory was
// updated on every attempt to read it.
var ErrSecretChanging = errors.New("sidecar: secret directory changed during every read attempt")

// DirWatcher calls OnChange when something in Dir changes: after an
// fsnotify event and a quiet period of Debounce, on every Poll tick (the
// safety net for lost events), and once at start. OnChange calls never
// overlap.
//
// It watches the directory itself, which is what sees kubelet's AtomicWriter
// swap the ..data symlink (the rename shows up as a Create of ..data). If
// the directory is removed or replaced, the watch is re-established as soon
// as it is back (checked every second while it is missing, and on every
// change and poll).
type DirWatcher struct {
	Dir      string
	Debounce time.Duration
	Poll     time.Duration
	OnChange func()
	Log      logr.Logger
}

// Start watches until ctx ends; it returns nil then. It fails only if no
// inotify instance can be created.
func (w *DirWatcher) Start(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("sidecar: watch %s: %w", w.Dir, err)
	}
	defer func() { _ = fw.Close() }()
	debounce := w.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	poll := w.Poll
	if poll <= 0 {
		poll = DefaultPollInterval
	}

	watching := false
	ensureWatch := func() {
		// Add on a watched path is cheap and idempotent; it also renews a
		// watch whose inode was replaced.
		if err := fw.Add(w.Dir); err != nil {
			if watching || !errors.Is(err, fs.ErrNotExist) {
				w.Log.V(1).Info("cannot watch directory; polling", "dir", w.Dir, "err", err.Error())
			}
			watching = false
			return
		}
		watching = true
	}
	ensureWatch()
	w.OnChange()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	// While the directory is missing, look for it every second rather than
	// only every poll: its return produces no event on a lost watch.
	var retry <-chan time.Time
	urgent := false // a read is due at once
	for {
		if !watching && retry == nil {
			retry = time.After(min(time.Second, poll))
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if ev.Name == w.Dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				watching = false
			}
			if filepath.Base(ev.Name) == dataDirName && ev.Has(fsnotify.Create) {
				// kubelet renamed ..data_tmp over ..data: the new set is
				// complete and visible. Read it now rather than after the
				// quiet period; what follows (links, removal of the old
				// directory) changes nothing the reader sees.
				timer.Reset(0)
				urgent = true
				continue
			}
			if !urgent { // never postpone the read after a swap
				timer.Reset(debounce)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			// An overflowed queue loses events: read everything again.
			w.Log.V(1).Info("watch error; re-reading", "dir", w.Dir, "err", err.Error())
			timer.Reset(debounce)
		case <-timer.C:
			urgent = false
			ensureWatch()
			w.OnChange()
		case <-ticker.C:
			ensureWatch()
			w.OnChange()
		case <-retry:
			retry = nil
			if ensureWatch(); watching {
				w.OnChange()
			}
		}
	}
}

// secretKeyNames are the Secret entries the sidecar reads; other entries of
// the Secret (endpoint, region, a CA bundle...) are not even opened.
var secretKeyNames = []string{
	contract.SecretKeyAkID, contract.SecretKeyAkSecret,
	contract.SecretKeyAccessKeyID, contract.SecretKeySecretAccessKey,
	contract.SecretKeySTSAccessKeyID, contract.SecretKeySTSSecret,
	contract.SecretKeySTSToken, contract.SecretKeySTSExpiration,
}

// ReadSecretDir reads the key entries of a projected Secret directory as
// one consistent set. In a directory kubelet's AtomicWriter maintains it
// resolves ..data once, reads the entries from that timestamped directory,
// and checks that ..data still points there afterwards, retrying if an
// update raced the read: a half-updated set is never returned. Other
// directories (plain files, tests, hostPath) are read as they are. Missing
// entries are simply absent from the map.
func ReadSecretDir(dir string) (map[string]string, error) {
	data, _, err := readSecretDir(dir)
	return data, err
}

// readSecretDir is ReadSecretDir that also returns when the set was
// written: the newest modification time of its entries (kubelet writes
// every entry anew on each update).
func readSecretDir(dir string) (map[string]string, time.Time, error) {
	link := filepath.Join(dir, dataDirName)
	for attempt := 0; attempt < 5; attempt++ {
		target, err := os.Readlink(link)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EINVAL) {
			// No ..data symlink: not an AtomicWriter directory.
			return readEntries(dir)
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("sidecar: read %s: %w", dataDirName, err)
		}
		path := target
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		data, written, err := readEntries(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // an update removed the timestamped directory
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		if again, err := os.Readlink(link); err == nil && again == target {
			return data, written, nil
		}
	}
	return nil, time.Time{}, fmt.Errorf("%w: %s", ErrSecretChanging, dir)
}

// readEntries reads the key entries present in dir and the newest
// modification time among them. A missing dir is an error wrapping
// fs.ErrNotExist.
func readEntries(dir string) (map[string]string, time.Time, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, time.Time{}, fmt.Errorf("sidecar: secret directory: %w", err)
	}
	data := map[string]string{}
	var written time.Time
	for _, name := range secretKeyNames {
		b, mtime, err := readBounded(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, time.Time{}, err
		}
		data[name] = string(b)
		if mtime.After(written) {
			written = mtime
		}
	}
	// The directory itself may have gone while we read (an update removed
	// it): then some entries look missing. Report that instead.
	if _, err := os.Stat(dir); err != nil {
		return nil, time.Time{}, fmt.Errorf("sidecar: secret directory: %w", err)
	}
	return data, written, nil
}

func readBounded(path string) ([]byte, time.Time, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sidecar: open secret entry: %w", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sidecar: stat secret entry: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, time.Time{}, fmt.Errorf("sidecar: secret entry %s is not a regular file", filepath.Base(path))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sidecar: read secret entry %s: %w", filepath.Base(path), err)
	}
	if len(b) > maxKeyFileSize {
		return nil, time.Time{}, fmt.Errorf("sidecar: secret entry %s is larger than %d bytes", filepath.Base(path), maxKeyFileSize)
	}
	return b, st.ModTime(), nil
}

// SecretSource turns a projected Secret directory into keys: on every
// change it reads a consistent set, skips content it has seen already,
// parses it with keys.FromSecret (every alias of the contract) and calls
// Publish with valid keys and when they were written, or Fail with the
// reason the set is unusable (missing directory, incomplete or malformed
// Secret). Neither callback is given a secret in text.
type SecretSource struct {
	Dir     string
	Publish func(k keys.Keys, written time.Time)
	Fail    func(reason string)
	Log     logr.Logger

	last   [32]byte
	seen   bool
	failed string // the failure last reported
}

// Check reads the directory once; DirWatcher.OnChange calls it. A failure
// is passed to Fail once, not again on every poll while it lasts.
func (s *SecretSource) Check() {
	data, written, err := readSecretDir(s.Dir)
	if errors.Is(err, ErrSecretChanging) {
		// Kubelet is still writing: each update that got in the way is an
		// event of its own, so the watcher calls Check again once the
		// directory is quiet (the poll is the safety net). Not a failure.
		s.seen = false
		return
	}
	if err != nil {
		s.seen = false // whatever comes back must be looked at
		s.fail(fmt.Sprintf("cannot read the projected secret: %v", err))
		return
	}
	sum := digest(data)
	if s.seen && sum == s.last {
		return // unchanged
	}
	s.last, s.seen = sum, true
	k, err := keys.FromSecret(data)
	if err != nil {
		s.fail(fmt.Sprintf("the secret does not hold a usable key pair: %v", err))
		return
	}
	s.failed = ""
	s.Publish(k, written)
}

func (s *SecretSource) fail(reason string) {
	if reason == s.failed {
		return
	}
	s.failed = reason
	s.Fail(reason)
}

// digest hashes the entries in a stable order.
func digest(data map[string]string) [32]byte {
	names := make([]string, 0, len(data))
	for n := range data {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(data[n]))
		h.Write([]byte{0})
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
