package s3fs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Lookups of names that no cache knows normally cost a HeadObject (and a
// directory probe when that misses). A tool that walks a directory whose
// listing is not cached (rsync, a rewrite of many files, the benchmark's
// second run) would send one per name. So once a directory has had
// lookaheadAfter such misses within lookaheadWindow, the next miss lists
// lookaheadKeys entries of the directory from the missed name on instead:
// that answers the lookup and fills the stat cache of the names after it.
const (
	lookaheadAfter  = 2
	lookaheadWindow = 5 * time.Second
	lookaheadKeys   = 1000
	maxMissDirs     = 1024 // directories whose misses are tracked
)

// missTracker counts recent stat-cache misses by directory.
type missTracker struct {
	mu   sync.Mutex
	dirs map[string]missCount
}

type missCount struct {
	n     int
	first time.Time
}

// miss records a miss in dk and reports whether dk had enough recent
// misses to list ahead.
func (m *missTracker) miss(dk string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirs == nil || len(m.dirs) >= maxMissDirs {
		m.dirs = make(map[string]missCount)
	}
	now := time.Now()
	c := m.dirs[dk]
	if now.Sub(c.first) > lookaheadWindow {
		c = missCount{first: now}
	}
	c.n++
	m.dirs[dk] = c
	return c.n > lookaheadAfter
}

// parsePage adds the entries of one ListObjectsV2 page of the directory dk
// (Delimiter "/") to ents: files with size and mtime, and directories
// (common prefixes, or markers some servers list as objects). A file wins
// over a directory of the same name, as in Lookup. It returns the smallest
// and the largest key or prefix of the page.
func parsePage(dk string, out *s3.ListObjectsV2Output, ents map[string]statEntry) (first, last string) {
	var dirs []string
	see := func(k string) {
		if first == "" || k < first {
			first = k
		}
		last = max(last, k)
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		see(key)
		name := strings.TrimPrefix(key, dk)
		if sub, ok := strings.CutSuffix(name, "/"); ok {
			dirs = append(dirs, sub)
			continue
		}
		if !validName(name) { // also skips the directory's own marker
			continue
		}
		ents[name] = statEntry{kind: kindFile, size: aws.ToInt64(o.Size), mtime: aws.ToTime(o.LastModified)}
	}
	for _, p := range out.CommonPrefixes {
		see(aws.ToString(p.Prefix))
		dirs = append(dirs, strings.TrimSuffix(strings.TrimPrefix(aws.ToString(p.Prefix), dk), "/"))
	}
	for _, name := range dirs {
		if !validName(name) {
			continue
		}
		if _, isFile := ents[name]; !isFile {
			ents[name] = statEntry{kind: kindDir}
		}
	}
	return first, last
}

// lookahead answers a stat of key (in directory dk, with name) from one
// listing of up to lookaheadKeys entries starting just before it, and puts
// every entry it saw into the stat cache. ok is false when the listing
// cannot tell (more than lookaheadKeys names sort between the start and
// key); the caller asks with HEAD then.
func (f *FS) lookahead(ctx context.Context, key, dk, name string) (ent statEntry, ok bool, err error) {
	// Start after key without its last byte: that sorts before key and
	// before every name that key is a prefix of, and is valid UTF-8 for
	// any ASCII last byte (others fall back to HEAD).
	if last := name[len(name)-1]; last >= 0x80 {
		return statEntry{}, false, nil
	}
	start := key[:len(key)-1]
	gen := f.listings.generation()
	rctx, cancel := f.reqCtx(ctx)
	defer cancel()
	f.count(opList)
	out, err := f.api.ListObjectsV2(rctx, &s3.ListObjectsV2Input{Bucket: &f.opts.Bucket, Prefix: aws.String(dk),
		Delimiter: aws.String("/"), StartAfter: aws.String(start), MaxKeys: aws.Int32(lookaheadKeys)})
	if err != nil {
		return statEntry{}, false, fmt.Errorf("list %s after %s: %w", dk, start, err)
	}
	ents := make(map[string]statEntry)
	first, last := parsePage(dk, out, ents)
	// Entries that raced a change made through the mount are not cached.
	if f.listings.generation() == gen {
		for n, e := range ents {
			f.cache.putListed(dk+n, e)
		}
	}
	if e, found := ents[name]; found {
		return e, true, nil
	}
	// Absent if the page began before key and reached past every key of
	// name ("name" itself and "name/..."). Nothing is concluded from a page
	// that did not begin before key: a server that mishandles StartAfter
	// (gofakes3 does) would otherwise make an existing name look absent.
	if first != "" && first < key && (!aws.ToBool(out.IsTruncated) || last >= key+"/") {
		return statEntry{kind: kindMissing}, true, nil
	}
	return statEntry{}, false, nil
}
