package s3fs

import "time"

// The write cache keeps the staging copy of a file written through the
// mount after it was uploaded and closed, so that reading it back or
// writing it again soon needs no request: a checkpoint read after it is
// written, a build output consumed by the next step, the small-file phase
// of the benchmark. A kept copy answers for StatCacheTTL after its last
// close, the same staleness the stat and listing caches allow: a change
// another client makes to the object within that time is not seen, after
// it the object is asked for again. Kept copies are bounded by
// Options.WriteCacheSize bytes in total (least recently closed first
// out), only files up to MultipartThreshold are kept, and they are clean:
// the bucket has every byte, so dropping one loses nothing.
//
// A kept file is a fileState with opens == 0 that stays in FS.files and in
// FS.kept; everything here runs with FS.mu held.

// keepableLocked reports whether st, just closed and clean, may be kept
// (FS.mu and st.mu held).
func (f *FS) keepableLocked(st *fileState) bool {
	return f.opts.WriteCacheSize > 0 && f.opts.StatCacheTTL > 0 && !f.closed && !st.deleted && st.file != nil &&
		st.stream == nil && len(st.released) == 0 &&
		st.size <= f.opts.MultipartThreshold && st.size <= f.opts.WriteCacheSize && f.files[st.key] == st
}

// keepLocked keeps st (FS.mu and st.mu held) and returns the kept states
// evicted to make room; the caller drops them with dropKept once it holds
// no lock.
func (f *FS) keepLocked(st *fileState) []*fileState {
	f.unkeepLocked(st)
	st.keptUntil = time.Now().Add(f.opts.StatCacheTTL)
	st.keptSize = st.size
	st.kept = f.kept.PushFront(st)
	f.keptBytes += st.keptSize
	f.space.add(0, st.keptSize)
	var evicted []*fileState
	for f.keptBytes > f.opts.WriteCacheSize || f.kept.Len() > f.opts.WriteCacheFiles {
		victim := f.kept.Back().Value.(*fileState)
		f.unkeepLocked(victim)
		if f.files[victim.key] == victim {
			delete(f.files, victim.key)
		}
		evicted = append(evicted, victim)
	}
	return evicted
}

// unkeepLocked takes st out of the write cache if it is in it.
func (f *FS) unkeepLocked(st *fileState) {
	if st.kept == nil {
		return
	}
	f.kept.Remove(st.kept)
	st.kept = nil
	f.keptBytes -= st.keptSize
	f.space.add(0, -st.keptSize)
}

// expiredLocked takes st out of the write cache and FS.files if it is a
// kept copy older than StatCacheTTL, and reports whether it did.
func (f *FS) expiredLocked(st *fileState, now time.Time) bool {
	if st.kept == nil || !now.After(st.keptUntil) {
		return false
	}
	f.unkeepLocked(st)
	if f.files[st.key] == st {
		delete(f.files, st.key)
	}
	return true
}

// dropKept removes the staging files of states taken out of the write
// cache. Call it without holding FS.mu.
func (f *FS) dropKept(states []*fileState) {
	for _, st := range states {
		// Out of FS.files, st cannot be opened again; whoever else still
		// holds it (an unlink, say) takes the file under st.mu too, so
		// only one of us removes it.
		st.mu.Lock()
		file := st.file
		st.file = nil
		f.chargeLocked(st)
		st.mu.Unlock()
		if file != nil {
			f.removeStagingFile(file)
		}
	}
}

// dropAllKept empties the write cache (at Close).
func (f *FS) dropAllKept() {
	f.mu.Lock()
	var all []*fileState
	for e := f.kept.Front(); e != nil; e = e.Next() {
		all = append(all, e.Value.(*fileState))
	}
	for _, st := range all {
		f.unkeepLocked(st)
		if f.files[st.key] == st {
			delete(f.files, st.key)
		}
	}
	f.mu.Unlock()
	f.dropKept(all)
}

// sweepKept drops the kept copies that expired, every StatCacheTTL (at
// least every second) until the FS closes: a copy nobody asks for again
// would otherwise keep its descriptor and disk space until evicted.
func (f *FS) sweepKept() {
	defer f.bg.Done()
	every := max(f.opts.StatCacheTTL, time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-f.bgCtx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		var expired []*fileState
		f.mu.Lock()
		// Most recently closed first: the expired ones are at the back.
		for e := f.kept.Back(); e != nil; {
			st := e.Value.(*fileState)
			e = e.Prev()
			if !f.expiredLocked(st, now) {
				break
			}
			expired = append(expired, st)
		}
		f.mu.Unlock()
		f.dropKept(expired)
	}
}
