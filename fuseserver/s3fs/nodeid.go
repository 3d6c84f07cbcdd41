package s3fs

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Node ids (docs/fuse-server.md, "Node ids"). The mount runs with
// fs.Options.ExternalNodeID: the FUSE node id of an inode is its inode
// number, chosen here, so that a process taking over the kernel
// connection of a dead one can tell what the kernel means by an id it
// never issued.
//
// The number of a node is a hash of its node key (the object key, plus
// "/" for a directory): the same key gets the same number in every
// process, and nothing needs to be written for it. The exceptions are
// numbers no hash of the current key gives: a key whose hash number the
// kernel still holds for another node (a collision, or the previous
// object of the key, unlinked but open) gets the next free number of a
// deterministic probe sequence, and a renamed node keeps its number
// under its new key. Exceptions are saved in the node table
// (nodetable.go) before the kernel can learn of them, with the
// directories whose entries were handed out to the kernel, from which a
// new process derives every other number (resume.go).

// nodeGrace is how long after a node was last handed out a kernel
// FORGET of it is not trusted: go-fuse registers a node only after
// Lookup returns it, so a FORGET of its previous registration can
// overtake the new one.
const nodeGrace = time.Second

// nodeHash computes the numbers of node keys. Its name is saved in the
// node table: a table written with another hash cannot be read.
type nodeHash struct {
	name string
	sum  func(key string) uint64
}

// defaultNodeHash is FNV-1a (64 bits) of the node key; candidate mixes
// it further.
var defaultNodeHash = nodeHash{name: "fnv1a64", sum: fnv1a64}

func fnv1a64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finaliser: every input bit affects every
// output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// candidate returns the i-th number key may have: i = 0 is its own
// number, higher ones the probe sequence after a collision. Numbers
// have 63 bits (positive as int64, clear of go-fuse's automatic numbers
// at 1<<63 and its reserved ^0) and are never 0 (invalid) or 1 (the
// root).
func (h nodeHash) candidate(key string, i int) uint64 {
	x := mix64(h.sum(key)+uint64(i)*0x9e3779b97f4a7c15) & (1<<63 - 1)
	if x <= fuse.FUSE_ROOT_ID {
		x += 2
	}
	return x
}

// nodeRec is a number in use: handed out to the kernel, or loaded from
// the node table of an earlier process.
type nodeRec struct {
	ino uint64
	// key is the node key; "" once the node was unlinked or overwritten
	// (detached: no name resolves to it any more).
	key string
	// node is the inode handed out last; nil for a record loaded from
	// the table that no request resolved yet.
	node   *fs.Inode
	issued time.Duration // when node was last handed out (nodeTable.now)
	// dying: queued for removal after a FORGET (forget, sweepLocked).
	dying bool
	// saved: the table holds the number: as an exception of key, or,
	// detached, as a number still taken.
	saved bool
	// moving is, while a rename moves the node, its new key: the table
	// says both, and on resume whichever exists wins.
	moving string
	// from, for a record loaded from the table, is the old key of a
	// rename whose outcome is unknown (key is the new one).
	from string
}

// nodeTable assigns numbers to node keys and tracks the numbers the
// kernel may hold. Its mutex is a leaf lock but for go-fuse's inode locks
// (Inode.Forgotten, NewInode), which go-fuse never holds while it calls
// the filesystem; the table file is written under it (rarely: see
// nodetable.go).
type nodeTable struct {
	hash  nodeHash
	log   logr.Logger
	epoch time.Time

	mu    sync.Mutex
	byIno map[uint64]*nodeRec
	byKey map[string]*nodeRec // keyed records only
	// dirs are the directory keys (the mount prefix for the root) whose
	// entries were handed out to the kernel, as saved in the table.
	dirs  map[string]bool
	dying []*nodeRec // FIFO of records FORGET left without a kernel reference
	timer *time.Timer
	file  *tableFile // nil: nothing is saved
	saved int        // records with saved set
	full  bool       // a limit of the table was hit (logged once)
	// inherited is when (nodeTable.now) the entries the kernel got from
	// the process that wrote the loaded table expire (adoptLocked).
	inherited time.Duration
}

func newNodeTable(h nodeHash, log logr.Logger) *nodeTable {
	return &nodeTable{hash: h, log: log, epoch: time.Now(), byIno: make(map[uint64]*nodeRec), byKey: make(map[string]*nodeRec), dirs: make(map[string]bool)}
}

// now is the time since the table was made (monotonic; cheaper to keep
// than a time.Time).
func (t *nodeTable) now() time.Duration { return time.Since(t.epoch) }

// liveLocked reports whether the kernel may hold rec's node: it is
// registered (or in go-fuse's tree), or was handed out so recently that
// go-fuse may not have registered it yet.
func (t *nodeTable) liveLocked(rec *nodeRec, now time.Duration) bool {
	return rec.node != nil && (!rec.node.Forgotten() || now-rec.issued < nodeGrace) //nolint:staticcheck // SA1019: a state query under the bridge's lock; NodeOnForgetter is a callback
}

// inode returns the inode to hand out for key below parent: the one
// handed out before while the kernel may hold it, else a new one from mk
// with the key's number. A fresh node (a created file) gets a number the
// kernel holds for no node: an inode the kernel still has for the key is
// an older object of the name (gone behind the mount's back, or resolved
// from an earlier process), which may still be open.
func (t *nodeTable) inode(ctx context.Context, parent *fs.Inode, key string, mode uint32, fresh bool, mk func() fs.InodeEmbedder) *fs.Inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	rec := t.byKey[key]
	switch {
	case rec == nil:
		rec = t.assignLocked(key)
	case fresh && (rec.node == nil || !rec.node.Forgotten()): //nolint:staticcheck // SA1019: a state query under the bridge's lock; NodeOnForgetter is a callback
		t.detachLocked(rec, now)
		rec = t.assignLocked(key)
	case !fresh && t.liveLocked(rec, now):
		rec.issued, rec.dying = now, false
		return rec.node
	}
	in := parent.NewInode(ctx, mk(), fs.StableAttr{Mode: mode, Ino: rec.ino})
	rec.node, rec.issued, rec.dying = in, now, false
	return in
}

// inodeAt is inode for a number the kernel holds already (LookupNode):
// ok is false if key has another number or the number another key.
func (t *nodeTable) inodeAt(ctx context.Context, parent *fs.Inode, key string, ino uint64, mode uint32, mk func() fs.InodeEmbedder) (in *fs.Inode, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	rec := t.byIno[ino]
	if rec == nil {
		if t.byKey[key] != nil {
			return nil, false
		}
		rec = &nodeRec{ino: ino, key: key}
		t.byIno[ino], t.byKey[key] = rec, rec
		if ino != t.hash.candidate(key, 0) {
			t.saveLocked(rec)
		}
	}
	if rec.key != key {
		return nil, false
	}
	if t.liveLocked(rec, now) {
		rec.issued, rec.dying = now, false
		return rec.node, true
	}
	in = parent.NewInode(ctx, mk(), fs.StableAttr{Mode: mode, Ino: rec.ino})
	rec.node, rec.issued, rec.dying = in, now, false
	return in, true
}

// assignLocked gives key the first of its candidates that no record
// holds. Any but the first is an exception and is saved.
func (t *nodeTable) assignLocked(key string) *nodeRec {
	for i := 0; ; i++ {
		ino := t.hash.candidate(key, i)
		if t.byIno[ino] != nil {
			continue
		}
		rec := &nodeRec{ino: ino, key: key}
		t.byIno[ino], t.byKey[key] = rec, rec
		if i > 0 {
			t.log.V(1).Info("node number taken, probed", "key", key, "ino", ino, "probe", i)
			t.saveLocked(rec)
		}
		return rec
	}
}

// peek returns the numbers keys have, or would get now (readdir entries).
func (t *nodeTable) peek(keys []string) []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]uint64, len(keys))
	for j, key := range keys {
		if rec := t.byKey[key]; rec != nil {
			out[j] = rec.ino
			continue
		}
		for i := 0; ; i++ {
			if ino := t.hash.candidate(key, i); t.byIno[ino] == nil {
				out[j] = ino
				break
			}
		}
	}
	return out
}

// numberOf returns the number key has, 0 if none.
func (t *nodeTable) numberOf(key string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rec := t.byKey[key]; rec != nil {
		return rec.ino
	}
	return 0
}

// noteDir records, before the first entry of the directory dk is handed
// out to the kernel, that its entries are: a new process lists dk to
// find the keys behind the numbers of its entries.
func (t *nodeTable) noteDir(dk string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dirs[dk] || !t.roomLocked(len(t.dirs), maxSavedDirs) {
		return
	}
	t.dirs[dk] = true
	t.appendLocked(tableRecord{Op: opDir, Key: dk})
}

// detach unlinks the node of key (unlink, rmdir): no name resolves to its
// number any more, and the number stays taken while the kernel holds it.
func (t *nodeTable) detach(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rec := t.adoptLocked(key); rec != nil {
		t.detachLocked(rec, t.now())
	}
}

// adoptLocked returns the record of key, making one with the key's own
// number if the table was inherited from an earlier process less than
// the entry timeout ago: the kernel may still use a name whose dentry it
// got from that process without looking it up again, and so hold that
// number for it (if it is an exception, the table has it). A rename or
// unlink of such a name must carry the number along or hold it.
func (t *nodeTable) adoptLocked(key string) *nodeRec {
	if rec := t.byKey[key]; rec != nil || t.now() >= t.inherited {
		return rec
	}
	ino := t.hash.candidate(key, 0)
	if t.byIno[ino] != nil {
		return nil
	}
	rec := &nodeRec{ino: ino, key: key}
	t.byIno[ino], t.byKey[key] = rec, rec
	return rec
}

// detachLocked detaches rec. If the kernel may still hold it, the table
// keeps its number taken (a hold), so that no process hands it out for
// another node while the kernel has the old one, open perhaps.
func (t *nodeTable) detachLocked(rec *nodeRec, now time.Duration) {
	if t.byKey[rec.key] == rec {
		delete(t.byKey, rec.key)
	}
	delete(t.dirs, rec.key)
	rec.key, rec.from, rec.moving = "", "", ""
	if rec.node != nil && !t.liveLocked(rec, now) {
		t.removeLocked(rec)
		return
	}
	if !rec.saved && !t.roomLocked(t.saved, maxSavedNodes) {
		return
	}
	if !rec.saved {
		rec.saved = true
		t.saved++
	}
	t.appendLocked(tableRecord{Op: opHold, Ino: rec.ino})
}

// removeLocked frees rec's number.
func (t *nodeTable) removeLocked(rec *nodeRec) {
	if t.byIno[rec.ino] != rec {
		return
	}
	delete(t.byIno, rec.ino)
	if rec.key != "" && t.byKey[rec.key] == rec {
		delete(t.byKey, rec.key)
		delete(t.dirs, rec.key)
	}
	t.unsaveLocked(rec)
}

// saveLocked saves rec's number under its key (an exception).
func (t *nodeTable) saveLocked(rec *nodeRec) {
	if !rec.saved {
		if !t.roomLocked(t.saved, maxSavedNodes) {
			return
		}
		rec.saved = true
		t.saved++
	}
	t.appendLocked(tableRecord{Op: opNode, Ino: rec.ino, Key: rec.key})
}

// unsaveLocked drops rec's number from the table.
func (t *nodeTable) unsaveLocked(rec *nodeRec) {
	if !rec.saved {
		return
	}
	rec.saved = false
	t.saved--
	t.appendLocked(tableRecord{Op: opDrop, Ino: rec.ino})
}

// forget handles go-fuse's OnForget of in: the kernel dropped its last
// reference. The number is freed at once for a detached node; a named one
// is queued for nodeGrace after it was last handed out, in case a lookup
// handed it out again meanwhile.
func (t *nodeTable) forget(in *fs.Inode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.byIno[in.StableAttr().Ino]
	if rec == nil || rec.node != in {
		return
	}
	if rec.key == "" {
		t.removeLocked(rec)
		t.maybeCompactLocked()
		return
	}
	if !rec.dying {
		rec.dying = true
		t.dying = append(t.dying, rec)
	}
	t.sweepLocked(t.now())
	if len(t.dying) > 0 && t.timer == nil && t.file != nil {
		t.timer = time.AfterFunc(nodeGrace, t.sweep)
	}
}

func (t *nodeTable) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.timer = nil
	t.sweepLocked(t.now())
	if len(t.dying) > 0 && t.file != nil {
		t.timer = time.AfterFunc(nodeGrace, t.sweep)
	}
}

// sweepLocked frees the numbers of queued records whose node has had no
// kernel reference since nodeGrace after it was last handed out.
func (t *nodeTable) sweepLocked(now time.Duration) {
	n := 0
	for _, rec := range t.dying {
		if rec.dying && now-rec.issued < nodeGrace {
			break
		}
		n++
		if !rec.dying {
			continue // handed out again
		}
		rec.dying = false
		if rec.node != nil && rec.node.Forgotten() { //nolint:staticcheck // SA1019: a state query under the bridge's lock; NodeOnForgetter is a callback
			t.removeLocked(rec)
		}
	}
	t.dying = t.dying[n:]
	if n > 0 {
		t.maybeCompactLocked()
	}
}

// nodeMove is a rename of the nodes at or below a key, from beginMove to
// commitMove or abortMove.
type nodeMove struct {
	src, dst  string
	overwrite bool       // dst existed
	recs      []*nodeRec // saved with from by beginMove
}

// movedKey returns the key below dst of key below src, and whether key
// moves (src ending in "/" moves everything under it).
func movedKey(key, src, dst string) (string, bool) {
	if key == src {
		return dst, true
	}
	if strings.HasSuffix(src, "/") && strings.HasPrefix(key, src) {
		return dst + key[len(src):], true
	}
	return "", false
}

// beginMove saves, before a rename of src to dst (node keys: both ending
// in "/" for a directory; overwrite if dst exists) starts, the new keys of the nodes it moves, with the old
// ones: a process that takes over after a death in the middle of it finds
// each node under whichever key exists.
func (t *nodeTable) beginMove(src, dst string, overwrite bool) *nodeMove {
	t.mu.Lock()
	defer t.mu.Unlock()
	mv := &nodeMove{src: src, dst: dst, overwrite: overwrite}
	t.adoptLocked(src)
	var recs []tableRecord
	for key, rec := range t.byKey {
		nk, ok := movedKey(key, src, dst)
		if !ok || rec.ino == t.hash.candidate(nk, 0) {
			continue
		}
		if !rec.saved && !t.roomLocked(t.saved+len(recs), maxSavedNodes) {
			continue
		}
		rec.moving = nk
		recs = append(recs, tableRecord{Op: opNode, Ino: rec.ino, Key: nk, From: key})
		mv.recs = append(mv.recs, rec)
	}
	t.appendLocked(recs...)
	return mv
}

// commitMove renames the nodes of a rename that succeeded: each keeps its
// number under its new key (an exception unless the number happens to be
// the new key's own), and a node the rename overwrote is detached.
func (t *nodeTable) commitMove(mv *nodeMove) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if mv.overwrite {
		t.adoptLocked(mv.dst)
	}
	moved := make(map[*nodeRec]string)
	var over []*nodeRec
	for key, rec := range t.byKey {
		if nk, ok := movedKey(key, mv.src, mv.dst); ok {
			moved[rec] = nk
		} else if _, ok := movedKey(key, mv.dst, mv.dst); ok {
			over = append(over, rec)
		}
	}
	for _, rec := range over {
		t.detachLocked(rec, now)
	}
	for dk := range t.dirs {
		if _, ok := movedKey(dk, mv.src, mv.dst); ok {
			delete(t.dirs, dk) // its entries the kernel holds are moved below
		}
	}
	for rec := range moved {
		delete(t.byKey, rec.key)
	}
	var recs []tableRecord
	for rec, nk := range moved {
		rec.key, rec.from, rec.moving = nk, "", ""
		t.byKey[nk] = rec
		switch {
		case rec.ino != t.hash.candidate(nk, 0) && (rec.saved || t.roomLocked(t.saved, maxSavedNodes)):
			if !rec.saved {
				rec.saved = true
				t.saved++
			}
			recs = append(recs, tableRecord{Op: opNode, Ino: rec.ino, Key: nk})
		case rec.ino == t.hash.candidate(nk, 0) && rec.saved:
			rec.saved = false
			t.saved--
			recs = append(recs, tableRecord{Op: opDrop, Ino: rec.ino})
		}
	}
	t.appendLocked(recs...)
	for _, rec := range mv.recs {
		rec.moving = ""
	}
}

// abortMove takes back what beginMove saved, after a rename failed.
func (t *nodeTable) abortMove(mv *nodeMove) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var recs []tableRecord
	for _, rec := range mv.recs {
		rec.moving = ""
		switch {
		case t.byIno[rec.ino] != rec:
		case rec.saved && rec.key != "":
			recs = append(recs, tableRecord{Op: opNode, Ino: rec.ino, Key: rec.key})
		case rec.saved:
			recs = append(recs, tableRecord{Op: opHold, Ino: rec.ino})
		default:
			recs = append(recs, tableRecord{Op: opDrop, Ino: rec.ino})
		}
	}
	t.appendLocked(recs...)
}

// resolved returns what the table knows of a number: its key ("" if
// none or detached), the old key of a rename whose outcome is unknown,
// and whether the number is taken at all.
func (t *nodeTable) resolved(ino uint64) (key, from string, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.byIno[ino]
	if rec == nil {
		return "", "", false
	}
	return rec.key, rec.from, true
}

// settle decides a rename the table left open (a record with from): the
// node stays at its key if keep, else it goes back to from.
func (t *nodeTable) settle(ino uint64, keep bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.byIno[ino]
	if rec == nil || rec.from == "" {
		return
	}
	if !keep && t.byKey[rec.from] == nil {
		delete(t.byKey, rec.key)
		rec.key = rec.from
		t.byKey[rec.key] = rec
	}
	rec.from = ""
	if rec.ino != t.hash.candidate(rec.key, 0) {
		t.saveLocked(rec)
	} else {
		t.unsaveLocked(rec)
	}
}

// snapshot returns the directories whose entries the kernel may hold,
// and the keys whose number is an exception (a resume index must not
// derive theirs).
func (t *nodeTable) snapshot() (dirs []string, exceptions map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for dk := range t.dirs {
		dirs = append(dirs, dk)
	}
	exceptions = make(map[string]bool)
	for key, rec := range t.byKey {
		if rec.ino != t.hash.candidate(key, 0) {
			exceptions[key] = true
		}
	}
	return dirs, exceptions
}
