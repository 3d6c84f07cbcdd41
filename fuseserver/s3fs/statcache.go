package s3fs

import (
	"container/list"
	"strings"
	"sync"
	"time"
)

// entryKind says what a name is in the bucket.
type entryKind uint8

const (
	kindMissing entryKind = iota // nothing under this name
	kindFile                     // an object
	kindDir                      // a marker "name/" or objects under "name/"
)

// statEntry is what the filesystem knows about one name.
type statEntry struct {
	kind  entryKind
	size  int64
	mtime time.Time // the object's LastModified, or the staged data's time
	// meta is the object's user metadata (POSIX attributes among it,
	// posixmeta.go); nil while not known (an entry from a listing, which
	// carries none).
	meta  map[string]string
	ctype string // Content-Type, when known
	// dirObj is the object that holds a directory's metadata: "name/",
	// "name" (an old-style object of type application/x-directory) or
	// "" (an implicit directory, or not known yet).
	dirObj string
}

// statCache is a TTL + LRU cache of statEntry by key (object key without a
// trailing slash, for directories too). A zero TTL disables it.
type statCache struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	items map[string]*list.Element // of *cacheItem
	lru   *list.List               // front = most recently used
}

type cacheItem struct {
	key     string
	ent     statEntry
	expires time.Time
}

func newStatCache(ttl time.Duration, max int) *statCache {
	return &statCache{ttl: ttl, max: max, items: make(map[string]*list.Element), lru: list.New()}
}

// get returns the live entry for key.
func (c *statCache) get(key string) (statEntry, bool) {
	if c.ttl <= 0 {
		return statEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return statEntry{}, false
	}
	it := el.Value.(*cacheItem)
	if time.Now().After(it.expires) {
		c.lru.Remove(el)
		delete(c.items, key)
		return statEntry{}, false
	}
	c.lru.MoveToFront(el)
	return it.ent, true
}

// put records ent for key, evicting the least recently used entry if full.
func (c *statCache) put(key string, ent statEntry) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	expires := time.Now().Add(c.ttl)
	if el, ok := c.items[key]; ok {
		it := el.Value.(*cacheItem)
		it.ent, it.expires = ent, expires
		c.lru.MoveToFront(el)
		return
	}
	c.items[key] = c.lru.PushFront(&cacheItem{key: key, ent: ent, expires: expires})
	for c.lru.Len() > c.max {
		last := c.lru.Back()
		c.lru.Remove(last)
		delete(c.items, last.Value.(*cacheItem).key)
	}
}

// putListed records ent, an entry from a listing (without metadata), for
// key, unless the cache has the same object (kind, size and time) with its
// metadata already.
func (c *statCache) putListed(key string, ent statEntry) {
	if old, ok := c.get(key); ok && old.meta != nil && old.kind == ent.kind &&
		(ent.kind == kindDir || (old.size == ent.size && old.mtime.Equal(ent.mtime))) {
		return
	}
	c.put(key, ent)
}

// remove forgets key.
func (c *statCache) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.lru.Remove(el)
		delete(c.items, key)
	}
}

// removePrefix forgets every key that starts with prefix.
func (c *statCache) removePrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, el := range c.items {
		if strings.HasPrefix(key, prefix) {
			c.lru.Remove(el)
			delete(c.items, key)
		}
	}
}
