package s3fs

import (
	"maps"
	"strings"
	"sync"
	"time"
)

// listCache keeps complete directory listings (name → entry) for the stat
// cache TTL, so that a lookup of a name the listing lacks is answered
// without a request (negative lookups, e.g. before every create), and a
// second readdir needs none. Changes made through this mount update the
// cached listings in place; changes by other clients show once the TTL
// ends, as for the stat cache. A zero TTL disables it.
//
// Memory is bounded by the stat cache size: the entries of all cached
// listings together stay under it (whole listings are dropped to make
// room).
type listCache struct {
	ttl        time.Duration
	maxEntries int

	mu      sync.Mutex
	gen     uint64 // bumped by every change, to refuse listings that raced one
	dirs    map[string]*listing
	entries int
}

type listing struct {
	ents    map[string]statEntry // by name; kindFile or kindDir
	expires time.Time
}

func newListCache(ttl time.Duration, maxEntries int) *listCache {
	return &listCache{ttl: ttl, maxEntries: maxEntries, dirs: make(map[string]*listing)}
}

// splitKey returns the directory key (ending in "/", or the mount prefix)
// and the name of key.
func splitKey(key string) (dk, name string) {
	i := strings.LastIndexByte(key, '/')
	return key[:i+1], key[i+1:]
}

// generation returns a token for put: a listing is cached only if nothing
// changed between generation and put.
func (c *listCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// liveLocked returns the fresh listing of dk.
func (c *listCache) liveLocked(dk string) *listing {
	l, ok := c.dirs[dk]
	if !ok {
		return nil
	}
	if time.Now().After(l.expires) {
		c.dropLocked(dk)
		return nil
	}
	return l
}

func (c *listCache) dropLocked(dk string) {
	if l, ok := c.dirs[dk]; ok {
		c.entries -= len(l.ents)
		delete(c.dirs, dk)
	}
}

// put caches the complete listing ents of dk, unless something changed
// since gen or it does not fit.
func (c *listCache) put(dk string, ents map[string]statEntry, gen uint64) {
	if c.ttl <= 0 || len(ents) > c.maxEntries/2 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.dropLocked(dk)
	for k := range c.dirs {
		if c.entries+len(ents) <= c.maxEntries {
			break
		}
		c.dropLocked(k)
	}
	c.dirs[dk] = &listing{ents: maps.Clone(ents), expires: time.Now().Add(c.ttl)}
	c.entries += len(ents)
}

// snapshot returns a copy of the fresh listing of dk.
func (c *listCache) snapshot(dk string) (map[string]statEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.liveLocked(dk)
	if l == nil {
		return nil, false
	}
	return maps.Clone(l.ents), true
}

// lookup answers for key from the fresh listing of its directory: the
// entry, or kindMissing if the listing lacks it. ok is false without one.
func (c *listCache) lookup(key string) (statEntry, bool) {
	dk, name := splitKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.liveLocked(dk)
	if l == nil {
		return statEntry{}, false
	}
	ent, found := l.ents[name]
	if !found {
		return statEntry{kind: kindMissing}, true
	}
	return ent, true
}

// set records that key now is ent in its directory's listing, if cached.
func (c *listCache) set(key string, ent statEntry) {
	dk, name := splitKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if l := c.liveLocked(dk); l != nil {
		if _, had := l.ents[name]; !had {
			c.entries++
		}
		l.ents[name] = ent
	}
}

// remove records that key is gone from its directory's listing.
func (c *listCache) remove(key string) {
	dk, name := splitKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if l := c.liveLocked(dk); l != nil {
		if _, had := l.ents[name]; had {
			c.entries--
			delete(l.ents, name)
		}
	}
}

// forget drops the listing of the directory holding key.
func (c *listCache) forget(key string) {
	dk, _ := splitKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.dropLocked(dk)
}

// forgetPrefix drops the listings of prefix (a directory key) and of every
// directory below it.
func (c *listCache) forgetPrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for dk := range c.dirs {
		if strings.HasPrefix(dk, prefix) {
			c.dropLocked(dk)
		}
	}
}
