package s3fs

import (
	"context"
	"errors"
	"math"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Staging disk is bounded twice (docs/fuse-server.md, "Staging disk"):
//
//   - per mount, Options.StagingLimit bytes: what the mount keeps staged,
//     dirty data, files being streamed and the write cache together;
//   - per filesystem, a reserve: staging never lets the free space of the
//     staging filesystem fall below max(StagingReserve, StagingReservePercent
//     of its size). Every mount of a node stages on the same filesystem,
//     so the reserve bounds them all together without any of them knowing
//     the others, and it counts what others write there too.
//
// Only operations that grow staging are checked: a write past the staged
// size, a truncate that grows, downloading an object to stage it. Before
// refusing one, the write cache (copies of data the bucket has) is
// evicted; then, while uploads are in flight that free space when they
// finish, the operation waits for them, at most RequestTimeout (each
// request is bounded by it, so an upload in flight then has either freed
// its space or failed); then it fails with EDQUOT (the mount's limit) or
// ENOSPC (the reserve). Nothing staged before is dropped: a refused write
// writes nothing, and every byte accepted before is uploaded as usual.
//
// The check and the write are not one atomic step: writers of different
// files that pass the check together can exceed the limit by one write
// request (at most 1 MiB) each.

// roomRequest is what decideRoom weighs, in bytes.
type roomRequest struct {
	grow    int64 // what the operation adds to staging
	staged  int64 // what the mount stages now, the write cache included
	kept    int64 // what of it the write cache holds (may be evicted)
	limit   int64 // the mount's limit; 0: none
	free    int64 // free space on the staging filesystem (with reserve > 0)
	reserve int64 // free space to leave; 0: none
}

// roomDecision says what to do: evict that many bytes of the write cache
// first; then admit the operation (refuse 0), or refuse it with EDQUOT or
// ENOSPC, or wait for uploads in flight and decide again.
type roomDecision struct {
	evict  int64
	refuse syscall.Errno
}

// decideRoom decides whether an operation that adds r.grow bytes to the
// mount's staging fits its limit and the filesystem's reserve, counting
// the write cache as free space. When both are short the reserve's ENOSPC
// wins: raising the mount's limit would not help then.
func decideRoom(r roomRequest) roomDecision {
	if r.grow <= 0 {
		return roomDecision{}
	}
	var short, nodeShort int64
	errno := syscall.EDQUOT
	if r.limit > 0 {
		short = r.staged + r.grow - r.limit
	}
	if r.reserve > 0 {
		nodeShort = r.reserve - (r.free - r.grow)
		short = max(short, nodeShort)
		if nodeShort > r.kept {
			errno = syscall.ENOSPC
		}
	}
	if short <= 0 {
		return roomDecision{}
	}
	if short <= r.kept {
		return roomDecision{evict: short}
	}
	return roomDecision{evict: r.kept, refuse: errno}
}

// reserveBytes is the free space to leave on a filesystem of total bytes.
func reserveBytes(total, minBytes int64, percent int) int64 {
	return max(minBytes, total/100*int64(percent))
}

// roomError is returned (wrapped) by an operation that needs d before it
// can go on; withRoom evicts, waits and retries it.
type roomError struct{ d roomDecision }

func (e *roomError) Error() string {
	if e.d.refuse == syscall.ENOSPC {
		return "the staging filesystem would fall below its reserve of free space"
	}
	return "the mount's staging limit is reached"
}

// Unwrap is the errno of the refusal (EDQUOT while only eviction is due:
// for a caller that does not run withRoom).
func (e *roomError) Unwrap() error {
	if e.d.refuse != 0 {
		return e.d.refuse
	}
	return syscall.EDQUOT
}

// space is the staging disk this mount uses and who waits for it.
type space struct {
	mu      sync.Mutex
	staged  int64         // bytes of staging files the mount holds (fileState.charged, summed)
	kept    int64         // of which the write cache (FS.keptBytes, mirrored for lock-free reads)
	freed   chan struct{} // closed when space may have been freed
	uploads int           // uploads (whole files, stream parts) in flight
}

func (s *space) snapshot() (staged, kept int64, uploads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.staged, s.kept, s.uploads
}

// changed returns a channel closed at the next signal.
func (s *space) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.freed == nil {
		s.freed = make(chan struct{})
	}
	return s.freed
}

func (s *space) signalLocked() {
	if s.freed != nil {
		close(s.freed)
		s.freed = nil
	}
}

func (s *space) add(staged, kept int64) {
	s.mu.Lock()
	s.staged += staged
	s.kept += kept
	if staged < 0 || kept > 0 {
		s.signalLocked()
	}
	s.mu.Unlock()
}

// uploading counts an upload in flight; the returned func ends it.
func (s *space) uploading() func() {
	s.mu.Lock()
	s.uploads++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.uploads--
		s.signalLocked()
		s.mu.Unlock()
	}
}

// StagedBytes returns the bytes of staging this mount holds now (the
// write cache included) and of them the write cache's.
func (f *FS) StagedBytes() (staged, cache int64) {
	s, k, _ := f.space.snapshot()
	return s, k
}

// chargeLocked brings the mount's count of staged bytes up to date with
// st (st.mu held): a staging file counts its size less the parts punched
// out of it. Call it after every change of st.file, st.size or
// st.released.
func (f *FS) chargeLocked(st *fileState) {
	var n int64
	if st.file != nil {
		n = st.size
		for _, r := range st.released {
			if r {
				n -= st.releasedPart
			}
		}
		n = max(n, 0)
	}
	if d := n - st.charged; d != 0 {
		st.charged = n
		f.space.add(d, 0)
	}
}

// bounded reports whether staging has a limit or a reserve.
func (f *FS) bounded() bool {
	return f.opts.StagingLimit > 0 || f.opts.StagingReserve > 0 || f.opts.StagingReservePercent > 0
}

// roomFor decides whether grow more bytes fit (st.mu of the growing
// state may be held: it takes no lock of a state). It returns nil or a
// *roomError.
func (f *FS) roomFor(grow int64) error {
	if grow <= 0 || !f.bounded() {
		return nil
	}
	staged, kept, _ := f.space.snapshot()
	r := roomRequest{grow: grow, staged: staged, kept: kept, limit: f.opts.StagingLimit}
	if f.opts.StagingReserve > 0 || f.opts.StagingReservePercent > 0 {
		var fs unix.Statfs_t
		if err := unix.Statfs(f.opts.StagingDir, &fs); err != nil {
			f.log.V(1).Info("staging filesystem not checked for free space", "error", err.Error())
		} else {
			bs := max(fs.Bsize, 1)
			blocks := func(n uint64) int64 { return int64(min(n, uint64(math.MaxInt64/bs))) * bs }
			r.free = blocks(fs.Bavail)
			r.reserve = reserveBytes(blocks(fs.Blocks), f.opts.StagingReserve, f.opts.StagingReservePercent)
		}
	}
	if d := decideRoom(r); d.evict > 0 || d.refuse != 0 {
		return &roomError{d: d}
	}
	return nil
}

// withRoom runs op, which fails with a *roomError when it needs room
// first: it evicts the write cache, waits for uploads in flight (at most
// RequestTimeout) and runs op again, or returns the refusal (EDQUOT or
// ENOSPC in the chain).
func (f *FS) withRoom(ctx context.Context, op func() error) error {
	if !f.bounded() {
		return op()
	}
	var deadline time.Time
	for {
		changed := f.space.changed()
		err := op()
		var re *roomError
		if !errors.As(err, &re) {
			return err
		}
		if re.d.evict > 0 && f.evictKept(re.d.evict) > 0 && re.d.refuse == 0 {
			continue
		}
		if re.d.refuse == 0 {
			continue // the cache was evicted by someone else meanwhile
		}
		_, _, uploads := f.space.snapshot()
		if deadline.IsZero() {
			deadline = time.Now().Add(f.opts.RequestTimeout)
		}
		wait := time.Until(deadline)
		if uploads == 0 || wait <= 0 {
			return err
		}
		timer := time.NewTimer(wait)
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return err
		}
		timer.Stop()
	}
}

// evictKept drops at least n bytes of the write cache, least recently
// closed first (or all of it), and returns how many it dropped.
func (f *FS) evictKept(n int64) int64 {
	var evicted []*fileState
	var freed int64
	f.mu.Lock()
	for freed < n && f.kept.Len() > 0 {
		victim := f.kept.Back().Value.(*fileState)
		freed += victim.keptSize
		f.unkeepLocked(victim)
		if f.files[victim.key] == victim {
			delete(f.files, victim.key)
		}
		evicted = append(evicted, victim)
	}
	f.mu.Unlock()
	f.dropKept(evicted)
	if len(evicted) > 0 {
		f.log.V(1).Info("write cache evicted for staging room", "files", len(evicted), "bytes", freed)
	}
	return freed
}
