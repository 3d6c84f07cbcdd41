package s3fs

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Directories follow s3fs's conventions: a marker object "name/" (empty,
// Content-Type application/x-directory) holds the directory's POSIX
// metadata; an old-style object "name" of type application/x-directory
// (or whose mode says S_IFDIR) is a directory too; a prefix with objects
// under it and no marker is an implicit directory with the mount's
// defaults. chmod, chown and utimens of a directory write the marker
// "name/" with the new metadata (replacing an old-style "name").

// dirContentTypes are the Content-Types that make an object a directory
// (Nextcloud writes the second).
var dirContentTypes = []string{dirContentType, "httpd/unix-directory"}

// isDirObject reports whether a HEAD of a key without trailing slash found
// a directory object rather than a file.
func isDirObject(ent statEntry) bool {
	ct, _, _ := strings.Cut(ent.ctype, ";")
	ct = strings.TrimSpace(ct)
	for _, d := range dirContentTypes {
		if strings.EqualFold(ct, d) {
			return true
		}
	}
	a := parsePosix(ent.meta)
	return a.hasMode && a.mode&syscall.S_IFMT == syscall.S_IFDIR
}

// statDirMeta returns the entry of the directory key (without trailing
// slash) with its metadata: the marker's if there is one, else none (an
// implicit directory).
func (f *FS) statDirMeta(ctx context.Context, key string) (statEntry, error) {
	ent, err := f.headFile(ctx, key+"/")
	if err == nil {
		ent.kind, ent.dirObj = kindDir, key+"/"
		return ent, nil
	}
	if isNotFound(err) {
		return statEntry{kind: kindDir, meta: map[string]string{}}, nil
	}
	return statEntry{}, err
}

// markerMeta returns the user metadata of the directory marker key.
func (f *FS) markerMeta(ctx context.Context, key string) (map[string]string, error) {
	ent, err := f.headFile(ctx, key)
	if err != nil {
		return nil, err
	}
	return ent.meta, nil
}

// fillDirEntAttr fills the attributes of the directory ent.
func (f *FS) fillDirEntAttr(out *fuse.Attr, ent statEntry) {
	f.fillAttr(out, ent, syscall.S_IFDIR)
	out.Size = 4096
	out.Blocks = 8
}

// setDirAttrs applies chmod, chown and utimens of in to the directory key
// (without trailing slash) whose entry is cur: it writes the marker with
// the new metadata (the marker is empty: a new one is the same object,
// and servers that keep directories as directories refuse to copy one).
func (f *FS) setDirAttrs(ctx context.Context, key string, cur statEntry, in *fuse.SetAttrIn) syscall.Errno {
	var attr fuse.Attr
	f.fillDirEntAttr(&attr, cur)
	a, ok := attrChanges(in, attr.Mode)
	if !ok {
		return 0
	}
	return f.changeDirMeta(ctx, key, cur, func(m map[string]string) map[string]string {
		return withPosix(m, a)
	})
}

// changeDirMeta changes the metadata of the directory key (without
// trailing slash, entry cur) with change, writing its marker.
func (f *FS) changeDirMeta(ctx context.Context, key string, cur statEntry, change func(map[string]string) map[string]string) syscall.Errno {
	meta := change(cur.meta)
	marker := key + "/"
	if err := f.putMarker(ctx, marker, meta); err != nil {
		f.log.Error(err, "setattr", "key", marker)
		return Errno(err)
	}
	if cur.dirObj == key {
		// The old-style object gives way to the marker, as in s3fs.
		if err := f.deleteObject(ctx, key); err != nil {
			f.log.Error(err, "setattr: delete old-style directory object", "key", key)
			return Errno(err)
		}
	}
	f.cache.put(key, statEntry{kind: kindDir, mtime: time.Now(), meta: meta, ctype: dirContentType, dirObj: marker})
	f.log.V(1).Info("setattr", "key", marker)
	return 0
}

// madeDirs remembers the directories this mount made, for StatCacheTTL: a
// lookup that misses in one lists it whole at once (it is small, and the
// listing then answers the creates that follow), where an unknown
// directory is listed only after lookaheadAfter misses, and in part. The
// listing is the bucket's: objects other clients put there show, unlike
// an empty listing assumed at mkdir.
type madeDirs struct {
	mu   sync.Mutex
	dirs map[string]time.Time // directory key → when made
}

const maxMadeDirs = 1024

func (m *madeDirs) add(dk string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirs == nil || len(m.dirs) >= maxMadeDirs {
		m.dirs = make(map[string]time.Time)
	}
	m.dirs[dk] = time.Now()
}

// take reports whether dk was made within ttl, and forgets it: one
// listing per directory.
func (m *madeDirs) take(dk string, ttl time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.dirs[dk]
	delete(m.dirs, dk)
	return ok && time.Since(t) < ttl
}
