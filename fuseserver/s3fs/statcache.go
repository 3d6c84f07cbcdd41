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
	mtime time.Time
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
