package s3fs

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"rekey.dev/rekey/fuseserver/journal"
)

// fileState is the local state of one object key while it is open or has
// staged data: the staging file with its full content (nil until the first
// write or truncate) and whether that content reached the bucket. All
// handles of the key share it. FS.files holds it from the first open until
// it is closed and clean (or unlinked).
//
// Lock order: uploadMu, then FS.mu, then mu.
type fileState struct {
	// uploadMu serialises uploads, renames and deletes of the object so a
	// background retry never races them.
	uploadMu sync.Mutex

	mu       sync.Mutex
	key      string
	file     *os.File // staged content, nil if not staged
	size     int64
	mtime    time.Time
	gen      uint64 // bumped by every change of the staged content
	uploaded uint64 // gen that last reached the bucket
	// opens counts open handles. It is atomic so that acquireState can
	// count an open under FS.mu without waiting for mu, which an upload
	// finishing may hold over network requests (FS.mu must never wait on
	// one file). Increments happen under FS.mu, so maybeDrop, which
	// checks it under FS.mu, never drops a state being opened.
	opens    atomic.Int32
	writers  int  // open handles that may write
	deleted  bool // unlinked or overwritten: never upload again
	retrying bool // a background retry goroutine runs
	// meta is the user metadata the object has or gets with the next
	// upload (POSIX attributes, attrs.go); nil while not known.
	meta map[string]string

	// streamable: the staged content is a new file written sequentially
	// so far, so it may be uploaded while written (stream.go).
	streamable bool
	stream     *stream // the upload running while the file is written
	// released marks, by part index (releasedPart bytes each), the parts
	// of a stream punched out of the staging file after the server had
	// them: the staging file is then no full copy of the file.
	released     []bool
	releasedPart int64

	// kept is the state's element in FS.kept while the write cache keeps
	// it (datacache.go; guarded by FS.mu, like keptUntil and keptSize).
	kept      *list.Element
	keptUntil time.Time
	keptSize  int64

	// charged is what st counts in the mount's staged bytes (space.go).
	charged int64

	// The journal (journal.go): rec is the record of the staging file;
	// recoveredFrom marks a state recovery made from an earlier process's
	// journal, verify that its conflict check has not run yet, and
	// failureReported that its first failed upload was reported.
	rec             jrec
	recoveredFrom   bool
	verify          bool
	failureReported bool
	// lost says why the state's data was retained on the node (retain):
	// the handles that had it open fail every further read, write and
	// close with EIO, instead of going on with the bucket's object.
	lost string
}

// lostLocked is the error of a handle whose data was retained (st.mu held).
func (s *fileState) lostLocked() error {
	if s.lost == "" {
		return nil
	}
	return fmt.Errorf("%s: %s: %w", s.key, s.lost, errRetained)
}

// dirtyLocked reports whether staged data has not reached the bucket yet.
func (s *fileState) dirtyLocked() bool {
	return s.file != nil && !s.deleted && s.gen != s.uploaded
}

// staged returns the staged size and mtime if the content is staged.
func (s *fileState) staged() (size int64, mtime time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stagedLocked()
}

// stagedLive is staged for a file that was not unlinked or overwritten.
func (s *fileState) stagedLive() (size int64, mtime time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deleted {
		return 0, time.Time{}, false
	}
	return s.stagedLocked()
}

func (s *fileState) stagedLocked() (size int64, mtime time.Time, ok bool) {
	if s.file == nil {
		return 0, time.Time{}, false
	}
	return s.size, s.mtime, true
}

// acquireState returns the state of key with one more open reference,
// creating it if needed.
func (f *FS) acquireState(key string) *fileState {
	f.mu.Lock()
	st, ok := f.files[key]
	var stale []*fileState
	if ok && f.expiredLocked(st, time.Now()) {
		stale, ok = []*fileState{st}, false
	}
	if ok {
		f.unkeepLocked(st) // open: no longer evictable
	} else {
		st = &fileState{key: key}
		f.files[key] = st
	}
	st.opens.Add(1)
	f.mu.Unlock()
	f.dropKept(stale)
	return st
}

// createState starts key as a new empty file with one open reference. It
// replaces any state the key had.
func (f *FS) createState(key string) (*fileState, error) {
	file, rec, err := f.newStagingFile(key, true, &journal.Base{Absent: true})
	if err != nil {
		return nil, err
	}
	st := &fileState{key: key, file: file, mtime: time.Now(), gen: 1, streamable: true, rec: rec}
	st.opens.Store(1)
	f.mu.Lock()
	old := f.files[key]
	if old != nil {
		f.unkeepLocked(old)
	}
	f.files[key] = st
	f.mu.Unlock()
	if old != nil {
		f.markDeleted(old)
	}
	return st, nil
}

// stateOf returns the current state of key without taking a reference.
func (f *FS) stateOf(key string) *fileState {
	f.mu.Lock()
	st := f.files[key]
	if st != nil && f.expiredLocked(st, time.Now()) {
		f.mu.Unlock()
		f.dropKept([]*fileState{st})
		return nil
	}
	f.mu.Unlock()
	return st
}

// releaseState drops one open reference. A state left dirty is retried in
// the background; a clean one is dropped.
func (f *FS) releaseState(st *fileState) {
	st.mu.Lock()
	st.opens.Add(-1)
	dirty := st.dirtyLocked()
	st.mu.Unlock()
	if dirty {
		f.scheduleRetry(st)
		return
	}
	f.maybeDrop(st)
}

// maybeDrop forgets st and its staging file if nobody uses it and it holds
// nothing that still has to be uploaded, unless the write cache keeps it.
func (f *FS) maybeDrop(st *fileState) {
	f.mu.Lock()
	st.mu.Lock()
	if st.opens.Load() > 0 || st.retrying || st.dirtyLocked() {
		st.mu.Unlock()
		f.mu.Unlock()
		return
	}
	if f.keepableLocked(st) {
		evicted := f.keepLocked(st)
		st.mu.Unlock()
		f.mu.Unlock()
		f.dropKept(evicted)
		return
	}
	f.unkeepLocked(st)
	if f.files[st.key] == st {
		delete(f.files, st.key)
	}
	file := st.file
	st.file, st.released = nil, nil
	f.chargeLocked(st)
	st.mu.Unlock()
	f.mu.Unlock()
	if file != nil {
		f.removeStagingFile(file)
	}
}

// markDeleted stops st from ever being uploaded again (its name was
// unlinked or overwritten) and drops it from FS.files.
func (f *FS) markDeleted(st *fileState) {
	f.mu.Lock()
	st.mu.Lock()
	st.deleted = true
	f.breakStreamLocked(st)
	f.unkeepLocked(st)
	if f.files[st.key] == st {
		delete(f.files, st.key)
	}
	st.mu.Unlock()
	f.mu.Unlock()
	st.mu.Lock() // not under FS.mu: a record is disk I/O
	f.recordDeletedLocked(st)
	st.mu.Unlock()
	f.maybeDrop(st)
}

// removeStagingFile removes a staging file whose data the bucket has (or
// that was deleted), then its record.
func (f *FS) removeStagingFile(file *os.File) {
	_ = file.Close()
	if err := os.Remove(file.Name()); err != nil {
		f.log.Error(err, "remove staging file", "path", file.Name())
		return // the record keeps describing what is left
	}
	if err := os.Remove(journal.RecordPath(file.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.log.Error(err, "remove staging record", "path", journal.RecordPath(file.Name()))
	}
}

// loadLocked stages the current content of the object (st.mu held). A
// missing object stages as empty.
func (f *FS) loadLocked(ctx context.Context, st *fileState) error {
	if st.file != nil {
		return nil
	}
	file, rec, err := f.newStagingFile(st.key, false, nil)
	if err != nil {
		return err
	}
	size, mtime, etag, err := f.download(ctx, st.key, file)
	if err != nil {
		f.removeStagingFile(file)
		return err
	}
	st.file, st.size, st.mtime, st.rec = file, size, mtime, rec
	f.chargeLocked(st)
	// Staged content equals the bucket: clean.
	st.uploaded = st.gen
	st.rec.base = &journal.Base{ETag: etag, Absent: etag == ""}
	if err := f.writeRecordLocked(st, false); err != nil {
		f.log.V(1).Info("staging record has no base", "key", st.key, "error", err.Error())
	}
	return nil
}

// download copies key into file in PartSize ranges, each its own request,
// pinned to the ETag of the first so that a concurrent overwrite fails the
// download instead of mixing versions. It returns the size, the mtime and
// the ETag ("" for a missing object).
func (f *FS) download(ctx context.Context, key string, file *os.File) (int64, time.Time, string, error) {
	chunk := f.opts.PartSize
	var (
		off   int64
		etag  string
		mtime = time.Now()
	)
	for {
		res, err := f.getRange(ctx, key, off, chunk, etag)
		if err != nil {
			if off == 0 && isNotFound(err) {
				return 0, mtime, "", nil
			}
			return 0, mtime, "", err
		}
		if off == 0 {
			etag = res.etag
			if !res.mtime.IsZero() {
				mtime = res.mtime
			}
		}
		if len(res.data) > 0 {
			// Not charged until staged whole: all of it is growth.
			if err := f.roomFor(off + int64(len(res.data))); err != nil {
				return 0, mtime, "", fmt.Errorf("stage %s: %w", key, err)
			}
			if _, err := file.WriteAt(res.data, off); err != nil {
				return 0, mtime, "", fmt.Errorf("stage %s: %w", key, err)
			}
		}
		off += int64(len(res.data))
		if int64(len(res.data)) < chunk {
			return off, mtime, etag, nil
		}
	}
}

// truncate sets the staged size of st, staging the object first unless the
// new size is 0.
func (f *FS) truncate(ctx context.Context, st *fileState, size int64) error {
	if err := f.settle(ctx, st); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.lostLocked(); err != nil {
		return err
	}
	if st.file == nil {
		if size == 0 {
			file, rec, err := f.newStagingFile(st.key, true, nil)
			if err != nil {
				return err
			}
			st.file, st.size, st.rec = file, 0, rec
			f.chargeLocked(st)
		} else if err := f.loadLocked(ctx, st); err != nil {
			return err
		}
	}
	if err := f.roomFor(size - st.size); err != nil {
		return fmt.Errorf("truncate %s to %d: %w", st.key, size, err)
	}
	if err := f.markDirtyLocked(st); err != nil {
		return err
	}
	f.breakStreamLocked(st)
	st.streamable = size == 0
	if err := st.file.Truncate(size); err != nil {
		return fmt.Errorf("truncate staging of %s: %w", st.key, err)
	}
	st.size = size
	f.chargeLocked(st)
	st.mtime = time.Now()
	st.gen++
	return nil
}

// writeAt writes data at off into the staging of st, staging the object
// first if needed. With appendMode the data goes to the end.
//
// A write below the parts a stream has handed to the upload drops the
// stream, or, if parts were already released from staging, first completes
// the upload and stages the object again (settle, then load).
func (f *FS) writeAt(ctx context.Context, st *fileState, data []byte, off int64, appendMode bool) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.lostLocked(); err != nil {
		return 0, err
	}
	if err := f.loadLocked(ctx, st); err != nil {
		return 0, err
	}
	if appendMode {
		off = st.size
	}
	if st.stream != nil && off < st.stream.frozen() {
		if st.hasReleasedLocked() {
			st.mu.Unlock()
			err := f.settle(ctx, st)
			st.mu.Lock()
			if err != nil {
				return 0, err
			}
			if err := f.loadLocked(ctx, st); err != nil {
				return 0, err
			}
		}
		st.streamable = false // rewrites data already uploading
		f.breakStreamLocked(st)
	}
	if err := f.roomFor(off + int64(len(data)) - st.size); err != nil {
		if st.stream == nil {
			return 0, fmt.Errorf("write %s at %d: %w", st.key, off, err)
		}
		// The parts of this file's own stream that the server has
		// acknowledged meanwhile free their room once released.
		f.releaseUploaded(st)
		if err := f.roomFor(off + int64(len(data)) - st.size); err != nil {
			return 0, fmt.Errorf("write %s at %d: %w", st.key, off, err)
		}
	}
	if err := f.markDirtyLocked(st); err != nil {
		return 0, err
	}
	n, err := st.file.WriteAt(data, off)
	if end := off + int64(n); end > st.size {
		st.size = end
		f.chargeLocked(st)
	}
	if n > 0 {
		st.mtime = time.Now()
		st.gen++
		if serr := f.streamLocked(st); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return n, fmt.Errorf("write staging of %s: %w", st.key, err)
	}
	return n, nil
}

// waitStream blocks a writer that is more than streamWindow parts ahead of
// the streamed upload of st (see stream), so staging stays bounded, and
// then releases the parts acknowledged meanwhile.
func (f *FS) waitStream(ctx context.Context, st *fileState) {
	st.mu.Lock()
	s := st.stream
	st.mu.Unlock()
	if s == nil {
		return
	}
	s.waitWindow(ctx)
	st.mu.Lock()
	if st.stream == s && st.file != nil && !st.deleted {
		f.releaseUploaded(st)
	}
	st.mu.Unlock()
}

// readStaged reads from the staging file of st if the file is staged
// (staged false: read the bucket). A read of parts a stream released
// completes the upload first (settle), after which the file is read from
// the bucket; the released parts of an unlinked file are gone (EIO).
func (f *FS) readStaged(ctx context.Context, st *fileState, dest []byte, off int64) (n int, staged bool, err error) {
	st.mu.Lock()
	if err := st.lostLocked(); err != nil {
		st.mu.Unlock()
		return 0, true, err
	}
	if st.overlapsReleasedLocked(off, int64(len(dest))) {
		deleted := st.deleted
		st.mu.Unlock()
		if deleted {
			return 0, true, fmt.Errorf("read %s at %d: unlinked while written, and the range was released from staging: %w", st.key, off, syscall.EIO)
		}
		if err := f.settle(ctx, st); err != nil {
			return 0, true, err
		}
		st.mu.Lock()
	}
	defer st.mu.Unlock()
	if st.file == nil {
		return 0, false, nil
	}
	n, err = st.file.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, true, fmt.Errorf("read staging of %s: %w", st.key, err)
	}
	return n, true, nil
}

// settle completes the streamed upload of st if parts of it were released
// from staging, and drops the staging file: the file is then an ordinary
// object. Whatever needs the released bytes back calls it first.
func (f *FS) settle(ctx context.Context, st *fileState) error {
	st.uploadMu.Lock()
	defer st.uploadMu.Unlock()
	return f.settleLocked(ctx, st)
}

// settleLocked is settle with st.uploadMu held.
func (f *FS) settleLocked(ctx context.Context, st *fileState) error {
	// Completing the upload of recovered data overwrites the object like
	// any upload: the conflict check comes first.
	if done, err := f.checkRecoveredLocked(ctx, st); done || err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.hasReleasedLocked() || st.deleted || st.stream == nil {
		return nil
	}
	f.recordUploadStartLocked(st)
	_, err := f.finishStreamLocked(ctx, st)
	return err
}

// sync uploads the staged content of st if it is dirty. On failure the
// state stays dirty so that a later sync retries, unless the failure means
// the data can never be uploaded: it is then kept on the node and
// reported (uploadFailed), and the error wraps errRetained.
func (f *FS) sync(ctx context.Context, st *fileState) error {
	st.uploadMu.Lock()
	defer st.uploadMu.Unlock()
	_, _, err := f.syncLocked(ctx, st, "")
	if err != nil && !errors.Is(err, errRetained) && f.uploadFailed(st, err) {
		return fmt.Errorf("%w: %w", errRetained, err)
	}
	return err
}

// syncLocked is sync with st.uploadMu held. A non-empty key uploads the
// staged content there instead, dirty or not, and leaves marking it clean
// to the caller (rename); it returns the generation it uploaded and the
// new object's ETag. A state recovered from the journal is checked
// against the object before its first upload of its own key.
func (f *FS) syncLocked(ctx context.Context, st *fileState, key string) (uint64, string, error) {
	if key == "" {
		if done, err := f.checkRecoveredLocked(ctx, st); done || err != nil {
			return 0, "", err
		}
	}
	st.mu.Lock()
	if err := st.lostLocked(); err != nil {
		st.mu.Unlock()
		return 0, "", err
	}
	own := key == ""
	if st.file == nil || st.deleted || (own && st.gen == st.uploaded) {
		st.mu.Unlock()
		return 0, "", nil
	}
	if own {
		f.recordUploadStartLocked(st)
	}
	if own && st.stream != nil {
		defer st.mu.Unlock()
		gen, err := f.finishStreamLocked(ctx, st)
		return gen, "", err
	}
	if st.hasReleasedLocked() {
		st.mu.Unlock()
		return 0, "", fmt.Errorf("upload %s as %s: staging misses released parts (not settled)", st.key, key)
	}
	if own {
		key = st.key
	} else {
		f.breakStreamLocked(st)
	}
	gen, size, file, mtime, meta := st.gen, st.size, st.file, st.mtime, f.writerMetaLocked(st)
	st.mu.Unlock()

	start := time.Now()
	done := f.space.uploading()
	etag, err := f.putFile(ctx, key, file, size, meta)
	done()
	if err != nil {
		f.log.Error(err, "upload failed, data stays staged", "key", key, "size", size)
		return 0, "", err
	}
	f.log.V(1).Info("uploaded", "key", key, "size", size, "duration", time.Since(start))
	if own {
		f.markUploaded(st, gen, etag)
	}
	f.cache.put(key, statEntry{kind: kindFile, size: size, mtime: mtime, meta: meta, ctype: contentType(key)})
	f.listings.set(key, statEntry{kind: kindFile, size: size, mtime: mtime})
	return gen, etag, nil
}

// finishStreamLocked completes the stream of st at the staged size (st.mu
// and st.uploadMu held: no write changes the file meanwhile; the part
// uploads take neither lock). On failure a stream that released nothing is
// aborted and the next sync uploads the staging whole; one that released
// parts stays for the next sync to upload what is missing and complete.
// After success a staging file with released parts is dropped.
func (f *FS) finishStreamLocked(ctx context.Context, st *fileState) (uint64, error) {
	s := st.stream
	gen, size, mtime := st.gen, st.size, st.mtime
	start := time.Now()
	if err := s.finish(ctx, size); err != nil {
		if !st.hasReleasedLocked() {
			f.breakStreamLocked(st)
		}
		f.log.Error(err, "upload failed, data stays staged", "key", st.key, "size", size, "streamed", true)
		return 0, err
	}
	st.stream = nil
	if gen > st.uploaded {
		st.uploaded = gen
	}
	st.verify = false
	if st.hasReleasedLocked() {
		file := st.file
		st.file, st.released, st.streamable = nil, nil, false
		f.chargeLocked(st)
		f.removeStagingFile(file)
	} else {
		f.recordUploadedLocked(st, gen, s.etag)
	}
	f.log.V(1).Info("uploaded", "key", st.key, "size", size, "duration", time.Since(start), "streamed", true)
	f.cache.put(st.key, statEntry{kind: kindFile, size: size, mtime: mtime})
	f.listings.set(st.key, statEntry{kind: kindFile, size: size, mtime: mtime})
	return gen, nil
}

// markUploaded records that generation gen of st reached the bucket as an
// object with etag, in st and in its journal record.
func (f *FS) markUploaded(st *fileState, gen uint64, etag string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if gen > st.uploaded {
		st.uploaded = gen
	}
	st.verify = false
	f.recordUploadedLocked(st, gen, etag)
}

// Retry backoff of released dirty files.
const (
	retryFirst = 500 * time.Millisecond
	retryMax   = 30 * time.Second
)

// scheduleRetry uploads st in the background with exponential backoff until
// it is clean, deleted, or the FS is closed.
func (f *FS) scheduleRetry(st *fileState) { f.scheduleUpload(st, retryFirst) }

// scheduleUpload is scheduleRetry with the first attempt after first.
func (f *FS) scheduleUpload(st *fileState, first time.Duration) {
	st.mu.Lock()
	if st.retrying || !st.dirtyLocked() {
		st.mu.Unlock()
		return
	}
	st.retrying = true
	st.mu.Unlock()

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		st.mu.Lock()
		st.retrying = false
		st.mu.Unlock()
		return
	}
	f.bg.Add(1) // under f.mu, so never concurrent with Close's Wait
	f.mu.Unlock()
	go func() {
		defer f.bg.Done()
		delay, wait := retryFirst, first
		for {
			// Wait first: the release that scheduled this follows a
			// flush that has just failed.
			timer := time.NewTimer(wait)
			select {
			case <-f.bgCtx.Done():
				timer.Stop()
				st.mu.Lock()
				st.retrying = false
				st.mu.Unlock()
				return
			case <-timer.C:
			}
			err := f.sync(f.bgCtx, st)
			st.mu.Lock()
			done := !st.dirtyLocked()
			if done {
				st.retrying = false
			}
			key := st.key
			st.mu.Unlock()
			if done {
				f.log.V(1).Info("background upload done", "key", key)
				f.maybeDrop(st)
				return
			}
			if err != nil {
				f.log.Info("background upload failed, will retry", "key", key, "retryIn", delay, "error", err.Error())
			}
			delay = min(delay*2, retryMax)
			wait = delay
		}
	}()
}

// keyedState is a state with its key at the time it was listed.
type keyedState struct {
	key string
	st  *fileState
}

// dirtyStates returns the states with data that did not reach the bucket,
// sorted by key.
func (f *FS) dirtyStates() []keyedState {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []keyedState
	for _, st := range f.files {
		st.mu.Lock()
		if st.dirtyLocked() {
			out = append(out, keyedState{key: st.key, st: st})
		}
		st.mu.Unlock()
	}
	sort.Slice(out, func(a, b int) bool { return out[a].key < out[b].key })
	return out
}
