package s3fs

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/hanwen/go-fuse/v2/fs"

	"rekey.dev/rekey/fuseserver/journal"
)

// ErrNotUploaded is wrapped by the error of FlushAll when staged data could
// not be uploaded.
var ErrNotUploaded = errors.New("s3fs: staged data not uploaded")

// FS is the filesystem of one bucket (or prefix). Create it with New, mount
// its Root once (Mount, Serve or fs.Mount with MountOptions), and call
// FlushAll and Close at shutdown.
type FS struct {
	api      API
	opts     Options
	log      logr.Logger
	root     *dirNode
	cache    *statCache
	listings *listCache
	misses   missTracker // stat-cache misses by directory, for lookahead
	made     madeDirs    // directories made through the mount (dirattrs.go)
	started  time.Time
	writer   string // this mount's writer id (journal.WriterID)

	readBufs *bufPool        // read-ahead chunk buffers, bounded
	requests requestCounters // S3 requests by operation
	maxCopy  int64           // largest single CopyObject (maxCopyObjectSize)
	copyPart int64           // part size of multipart copies (copyPartSize)

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	retainedState // staged data kept on the node, not uploaded (journal.go)

	mu     sync.Mutex
	closed bool                  // Close was called: no new retries
	files  map[string]*fileState // by object key
	// lostStates are the states whose data recovery retained, by key: a
	// handle of an earlier server reopened on one fails (fileState.lost).
	lostStates map[string]*fileState
	kept       *list.List // write cache: closed clean states, most recent first (datacache.go)
	keptBytes  int64

	space space // staging disk in use (space.go)

	nodes *nodeTable // node numbers (nodeid.go)
	index resumeIndex
}

// New validates opts and returns a filesystem that serves opts.Bucket
// through api.
func New(api API, opts Options) (*FS, error) {
	if api == nil {
		return nil, fmt.Errorf("%w: nil API", ErrInvalidOptions)
	}
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	f := &FS{
		api:        api,
		opts:       opts,
		log:        opts.Logger.WithValues("bucket", opts.Bucket, "prefix", opts.Prefix),
		cache:      newStatCache(opts.StatCacheTTL, opts.StatCacheSize),
		listings:   newListCache(opts.StatCacheTTL, opts.StatCacheSize),
		started:    time.Now(),
		files:      make(map[string]*fileState),
		lostStates: make(map[string]*fileState),
		kept:       list.New(),
		maxCopy:    maxCopyObjectSize,
		copyPart:   copyPartSize,
	}
	h := opts.nodeHash
	if h.sum == nil {
		h = defaultNodeHash
	}
	if f.nodes, err = openNodeTable(filepath.Join(opts.StagingDir, nodeTableDir), h, opts.StatCacheTTL, f.log); err != nil {
		return nil, err
	}
	id, replaced, err := journal.WriterID(opts.StagingDir)
	if err != nil {
		return nil, err
	}
	if replaced {
		f.log.Info("the writer id of the staging directory was unreadable and is replaced; recovery retains rather than uploads data it cannot attribute")
	}
	f.writer = id
	f.readBufs = newBufPool(readChunkSize, int(opts.ReadAheadMemory/readChunkSize))
	f.bgCtx, f.bgCancel = context.WithCancel(context.Background())
	f.root = &dirNode{node: node{fsys: f}}
	// Staged data an earlier process left is uploaded in the background
	// (journal.go); what cannot be is reported through opts.OnRetained.
	f.recoverStaging()
	if f.opts.WriteCacheSize > 0 && f.opts.StatCacheTTL > 0 {
		f.bg.Add(1)
		go f.sweepKept()
	}
	return f, nil
}

// Root is the root directory node to mount. An FS can be mounted once.
func (f *FS) Root() fs.InodeEmbedder { return f.root }

// ResetNodes empties the node table in the staging directory: a new
// kernel connection (INIT) holds none of the node numbers an earlier
// process handed out. A server that takes over a live connection instead
// keeps the table, which New loaded, so that LookupNode resolves them.
func (f *FS) ResetNodes() error { return f.nodes.reset() }

// Close stops background upload retries and waits for them, and removes
// the staging copies the write cache kept (their data is in the bucket).
// It uploads nothing and deletes no data that is not uploaded: call
// FlushAll first.
func (f *FS) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.bgCancel()
	f.bg.Wait()
	f.dropAllKept()
	return f.nodes.close()
}

// FlushAll uploads every file with staged data that did not reach the
// bucket yet (used at shutdown). The error wraps ErrNotUploaded and lists
// the keys that could not be uploaded with their causes; their data stays
// staged.
func (f *FS) FlushAll(ctx context.Context) error {
	var errs []error
	for _, ks := range f.dirtyStates() {
		if err := f.sync(ctx, ks.st); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ks.key, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %d file(s): %w", ErrNotUploaded, len(errs), errors.Join(errs...))
	}
	return nil
}

// Pending returns the keys, sorted, whose data is staged locally but did
// not reach the bucket yet.
func (f *FS) Pending() []string {
	states := f.dirtyStates()
	keys := make([]string, len(states))
	for i, ks := range states {
		keys[i] = ks.key
	}
	return keys
}

// stat says what key (without trailing slash) is: a locally staged file,
// an object, or a directory (marker or implicit), consulting the stat cache
// first. A missing name is cached as missing.
func (f *FS) stat(ctx context.Context, key string) (statEntry, syscall.Errno) {
	if st := f.stateOf(key); st != nil {
		if ent, ok := st.stagedEntry(); ok {
			return ent, 0
		}
	}
	// An entry without its metadata (from a listing) is looked up below:
	// its mode, owner and times are in the object's (or marker's)
	// metadata. What the listing said picks the request.
	hint, hinted := kindMissing, false
	if ent, ok := f.cache.get(key); ok {
		if ent.kind == kindMissing {
			return ent, syscall.ENOENT
		}
		if ent.meta != nil {
			return ent, 0
		}
		hint, hinted = ent.kind, true
	} else if ent, ok := f.listings.lookup(key); ok {
		if ent.kind == kindMissing {
			return ent, syscall.ENOENT
		}
		hint, hinted = ent.kind, true
	} else if dk, _ := splitKey(key); f.opts.StatCacheTTL > 0 && f.made.take(dk, f.opts.StatCacheTTL) {
		ents, err := f.listDir(ctx, dk)
		if err != nil {
			f.log.V(1).Info("stat failed", "key", key, "error", err.Error())
			return statEntry{}, Errno(err)
		}
		_, name := splitKey(key)
		ent, found := ents[name]
		if !found {
			f.cache.put(key, statEntry{kind: kindMissing})
			return statEntry{kind: kindMissing}, syscall.ENOENT
		}
		hint, hinted = ent.kind, true
	} else if dk, name := splitKey(key); f.opts.StatCacheTTL > 0 && f.misses.miss(dk) {
		ent, ok, err := f.lookahead(ctx, key, dk, name)
		if err != nil {
			f.log.V(1).Info("stat failed", "key", key, "error", err.Error())
			return statEntry{}, Errno(err)
		}
		if ok {
			if ent.kind == kindMissing {
				f.cache.put(key, ent)
				return ent, syscall.ENOENT
			}
			hint, hinted = ent.kind, true
		}
	}
	if hinted && hint == kindDir {
		ent, err := f.statDirMeta(ctx, key)
		if err != nil {
			f.log.V(1).Info("stat failed", "key", key, "error", err.Error())
			return statEntry{}, Errno(err)
		}
		f.cache.put(key, ent)
		return ent, 0
	}
	// HEAD first: most lookups that reach the bucket are of existing
	// files (negative lookups in listed or new directories are answered by
	// the listing cache above), so the directory probe only runs on a miss.
	ent, err := f.headFile(ctx, key)
	if err == nil {
		if isDirObject(ent) {
			ent.kind, ent.dirObj = kindDir, key
		}
		f.cache.put(key, ent)
		return ent, 0
	}
	if !isNotFound(err) {
		f.log.V(1).Info("stat failed", "key", key, "error", err.Error())
		return ent, Errno(err)
	}
	isDir, marker, err := f.probeDir(ctx, key+"/")
	if err == nil && isDir {
		ent = statEntry{kind: kindDir, meta: map[string]string{}}
		if marker {
			ent, err = f.statDirMeta(ctx, key)
		}
	}
	if err != nil {
		f.log.V(1).Info("stat failed", "key", key, "error", err.Error())
		return statEntry{}, Errno(err)
	}
	if isDir {
		f.cache.put(key, ent)
		return ent, 0
	}
	f.cache.put(key, statEntry{kind: kindMissing})
	return statEntry{kind: kindMissing}, syscall.ENOENT
}

// fileMode and dirMode are the permission bits of entries.
func (f *FS) fileMode() uint32 { return 0o666 &^ f.opts.Umask }
func (f *FS) dirMode() uint32  { return 0o777 &^ f.opts.Umask }
