package s3fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/fuseserver/journal"
	"rekey.dev/rekey/internal/fusetest"
)

var updateNodeTable = flag.Bool("update-nodetable", false, "rewrite testdata/nodetable-v1.compact.jsonl")

// stagingEntries lists the staging directory without the node table's
// subdirectory.
func stagingEntries(dir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	out := ents[:0]
	for _, ent := range ents {
		if ent.Name() != nodeTableDir && ent.Name() != journal.WriterDir {
			out = append(out, ent)
		}
	}
	return out, err
}

// tinyHash numbers every key alike: each key gets the next number of the
// probe sequence (candidate(·, i) is the same for all keys).
var tinyHash = nodeHash{name: "tiny", sum: func(string) uint64 { return 7 }}

func statIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// direntInos returns the d_ino of each entry of dir, from getdents(2).
func direntInos(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	out := make(map[string]uint64)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			ino := binary.NativeEndian.Uint64(b[0:8])
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := b[19:reclen]
			out[string(name[:bytes.IndexByte(name, 0)])] = ino
			b = b[reclen:]
		}
	}
}

// handleOf returns the file handle the kernel gives path (node id and
// generation), for openByHandle on another mount.
func handleOf(t *testing.T, path string) unix.FileHandle {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	if err != nil {
		t.Fatalf("name_to_handle_at %s: %v", path, err)
	}
	return h
}

// openByHandle opens a file handle on the mount at dir: a node id that
// mount's kernel inode cache does not know reaches the server as a LOOKUP
// of "." on it, which go-fuse answers with LookupNode.
func openByHandle(dir string, h unix.FileHandle) (*os.File, error) {
	mfd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "by-handle"), nil
}

// resumedFS is a second FS on the staging directory of e (so on its node
// table), mounted without resetting the table, as a process that takes a
// mount over serves it, and with NFS export support so that
// open_by_handle_at on it asks LookupNode.
func resumedFS(t *testing.T, e *env, opts Options) (*FS, string) {
	t.Helper()
	opts.Bucket, opts.StagingDir = testBucket, e.fsys.opts.StagingDir
	fsys, err := New(e.api, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = fsys.Close() })
	dir := t.TempDir()
	mo := fsys.MountOptions(false)
	mo.ExtraCapabilities |= fuse.CAP_EXPORT_SUPPORT
	srv, err := fs.Mount(dir, fsys.Root(), mo)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { fusetest.Unmount(t, srv) })
	return fsys, dir
}

// readByHandle reads the file behind h on the mount at dir and checks its
// inode number.
func readByHandle(t *testing.T, dir string, h unix.FileHandle, ino uint64) []byte {
	t.Helper()
	f, err := openByHandle(dir, h)
	if err != nil {
		t.Fatalf("open_by_handle_at (ino %d): %v", ino, err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Ino != ino {
		t.Fatalf("fstat: ino %d, %v; want %d", st.Ino, err, ino)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// tableRecords reads the records of the node table of f's staging dir.
func tableRecords(t *testing.T, f *FS) []tableRecord {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.opts.StagingDir, nodeTableDir, nodeTableName))
	if err != nil {
		t.Fatal(err)
	}
	var out []tableRecord
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if i == 0 {
			continue
		}
		var r tableRecord
		if err := r.decode(line); err != nil {
			t.Fatalf("table line %d: %v", i+1, err)
		}
		out = append(out, r)
	}
	return out
}

// savedNode reports whether the table's last word on ino is that it is
// the node of key.
func savedNode(recs []tableRecord, ino uint64, key string) bool {
	last := tableRecord{}
	for _, r := range recs {
		if r.Ino == ino {
			last = r
		}
	}
	return last.Op == opNode && last.Key == key && last.From == ""
}

// TestNodeIDStable: a key's inode number is the hash number of its node
// key, in stat and in readdir, and the same after a remount by a new FS.
func TestNodeIDStable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	e.put("a.txt", []byte("a"))
	e.put("d/b.txt", []byte("b"))
	want := map[string]uint64{
		"a.txt":   defaultNodeHash.candidate("a.txt", 0),
		"d":       defaultNodeHash.candidate("d/", 0),
		"d/b.txt": defaultNodeHash.candidate("d/b.txt", 0),
	}
	check := func(dir string) {
		t.Helper()
		if ino := statIno(t, dir); ino != fuse.FUSE_ROOT_ID {
			t.Fatalf("root: ino %d, want 1", ino)
		}
		for name, ino := range want {
			if got := statIno(t, filepath.Join(dir, name)); got != ino {
				t.Fatalf("%s: ino %d, want %d", name, got, ino)
			}
		}
		dents := direntInos(t, dir)
		if dents["a.txt"] != want["a.txt"] || dents["d"] != want["d"] {
			t.Fatalf("readdir inos %v, want %v", dents, want)
		}
	}
	check(e.dir)
	unmount(t, e.server)

	f2, err := New(e.api, Options{Bucket: testBucket, StagingDir: e.fsys.opts.StagingDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f2.Close() })
	dir := t.TempDir()
	srv, err := Mount(dir, f2, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, srv) })
	check(dir)
}

// TestNodeIDCollision: keys whose hash numbers collide get the next free
// numbers of the probe sequence, saved in the node table, so that a new
// FS on the table resolves every one of them; a file created while the
// kernel still holds the unlinked previous one of its name gets a new
// number too.
func TestNodeIDCollision(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{nodeHash: tinyHash}, true)
	names := []string{"x", "y", "z"}
	inos := map[string]uint64{}
	handles := map[string]unix.FileHandle{}
	for i, name := range names {
		if err := os.WriteFile(e.path(name), []byte("content of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		inos[name] = statIno(t, e.path(name))
		if want := tinyHash.candidate(name, i); inos[name] != want {
			t.Fatalf("%s: ino %d, want probe %d: %d", name, inos[name], i, want)
		}
		handles[name] = handleOf(t, e.path(name))
	}
	recs := tableRecords(t, e.fsys)
	if savedNode(recs, inos["x"], "x") || !savedNode(recs, inos["y"], "y") || !savedNode(recs, inos["z"], "z") {
		t.Fatalf("table %+v: want y and z saved, x not (its number is its own)", recs)
	}

	// x unlinked while open, then created again: the kernel holds the old
	// x, so the new one gets another number, and the old one is held.
	old, err := os.Open(e.path("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := os.Remove(e.path("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path("x"), []byte("new x"), 0o644); err != nil {
		t.Fatal(err)
	}
	newX := statIno(t, e.path("x"))
	if newX == inos["x"] {
		t.Fatalf("recreated x has the number of the unlinked open one (%d)", newX)
	}
	if got, err := io.ReadAll(old); err != nil || string(got) != "content of x" {
		t.Fatalf("unlinked x: %q, %v", got, err)
	}
	recs = tableRecords(t, e.fsys)
	if !savedNode(recs, newX, "x") {
		t.Fatalf("table %+v: want the new x saved as %d", recs, newX)
	}
	held := false
	for _, r := range recs {
		if r.Ino == inos["x"] {
			held = r.Op == opHold
		}
	}
	if !held {
		t.Fatalf("table %+v: want the unlinked open x (%d) held", recs, inos["x"])
	}
	handles["x"] = handleOf(t, e.path("x"))
	inos["x"] = newX

	_, dir := resumedFS(t, e, Options{nodeHash: tinyHash})
	for _, name := range names {
		want := "content of " + name
		if name == "x" {
			want = "new x"
		}
		if got := readByHandle(t, dir, handles[name], inos[name]); string(got) != want {
			t.Fatalf("%s by handle: %q, want %q", name, got, want)
		}
	}
}

// TestNodeIDRename: a renamed file or directory keeps its number (and its
// open handles) under the new name, the table saves that, a file created
// under the old name gets another number, and a new FS resolves all of
// them by number, also the plain ones (from the listing of the
// directories the table names).
func TestNodeIDRename(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	e.put("dir/a.txt", []byte("payload a"))
	e.put("dir/plain.txt", []byte("plain"))
	e.put("p/q.txt", []byte("payload q"))

	open := func(name string) *os.File {
		f, err := os.Open(e.path(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	fa, fq := open("dir/a.txt"), open("p/q.txt")
	ia, iq, ip := statIno(t, e.path("dir/a.txt")), statIno(t, e.path("p/q.txt")), statIno(t, e.path("p"))
	iplain := statIno(t, e.path("dir/plain.txt"))

	if err := os.Rename(e.path("dir/a.txt"), e.path("dir/b.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(e.path("p"), e.path("r")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{"dir/b.txt": ia, "r/q.txt": iq, "r": ip} {
		if got := statIno(t, e.path(name)); got != want {
			t.Fatalf("%s after rename: ino %d, want %d", name, got, want)
		}
	}
	for f, want := range map[*os.File]uint64{fa: ia, fq: iq} {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Ino != want {
			t.Fatalf("open file after rename: ino %d, %v; want %d", st.Ino, err, want)
		}
	}
	if err := os.WriteFile(e.path("dir/a.txt"), []byte("new a"), 0o644); err != nil {
		t.Fatal(err)
	}
	inew := statIno(t, e.path("dir/a.txt"))
	if inew == ia {
		t.Fatalf("new dir/a.txt has the renamed file's number %d", ia)
	}
	recs := tableRecords(t, e.fsys)
	for ino, key := range map[uint64]string{ia: "dir/b.txt", iq: "r/q.txt", ip: "r/", inew: "dir/a.txt"} {
		if !savedNode(recs, ino, key) {
			t.Fatalf("table %+v: want %d saved as %s", recs, ino, key)
		}
	}
	handles := map[string]unix.FileHandle{}
	for _, name := range []string{"dir/b.txt", "r/q.txt", "dir/a.txt", "dir/plain.txt"} {
		handles[name] = handleOf(t, e.path(name))
	}

	f2, dir := resumedFS(t, e, Options{})
	for name, c := range map[string]struct {
		ino  uint64
		data string
	}{
		"dir/b.txt":     {ia, "payload a"},
		"r/q.txt":       {iq, "payload q"},
		"dir/a.txt":     {inew, "new a"},
		"dir/plain.txt": {iplain, "plain"},
	} {
		if got := readByHandle(t, dir, handles[name], c.ino); string(got) != c.data {
			t.Fatalf("%s by handle: %q, want %q", name, got, c.data)
		}
	}
	// The resolved nodes have their paths: stat by name finds the same.
	if got := statIno(t, filepath.Join(dir, "r/q.txt")); got != iq {
		t.Fatalf("r/q.txt on the new FS: ino %d, want %d", got, iq)
	}
	if got := f2.nodes.numberOf("r/"); got != ip {
		t.Fatalf("r/ on the new FS: number %d, want %d", got, ip)
	}
}

// TestNodeIDForget drives go-fuse's bridge without a kernel: a number the
// kernel forgets leaves the table (after nodeGrace), a detached one at
// once, and LOOKUP "." of a number resolves it.
func TestNodeIDForget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{nodeHash: tinyHash}, false)
	e.put("a", []byte("1"))
	e.put("b", []byte("2"))
	if err := e.fsys.ResetNodes(); err != nil {
		t.Fatal(err)
	}
	raw := fs.NewNodeFS(e.fsys.Root(), e.fsys.MountOptions(false))
	lookup := func(parent uint64, name string) fuse.EntryOut {
		t.Helper()
		var out fuse.EntryOut
		if st := raw.Lookup(nil, &fuse.InHeader{NodeId: parent}, name, &out); st != fuse.OK {
			t.Fatalf("lookup %s: %v", name, st)
		}
		return out
	}
	a, b := lookup(1, "a"), lookup(1, "b")
	if a.NodeId != tinyHash.candidate("a", 0) || b.NodeId != tinyHash.candidate("b", 1) || a.Ino != a.NodeId {
		t.Fatalf("node ids a %d (ino %d), b %d; want probes 0 and 1", a.NodeId, a.Ino, b.NodeId)
	}
	if !savedNode(tableRecords(t, e.fsys), b.NodeId, "b") {
		t.Fatal("b not saved")
	}
	raw.Forget(b.NodeId, 1)
	eventually(t, 5*time.Second, "b forgotten", func() bool { return e.fsys.nodes.numberOf("b") == 0 })
	recs := tableRecords(t, e.fsys)
	if last := recs[len(recs)-1]; last.Op != opDrop || last.Ino != b.NodeId {
		t.Fatalf("table %+v: want b dropped last", recs)
	}
	// Unlinked: held while the kernel has it, freed at its FORGET.
	if st := raw.Unlink(nil, &fuse.InHeader{NodeId: 1}, "a"); st != fuse.OK {
		t.Fatalf("unlink: %v", st)
	}
	if recs := tableRecords(t, e.fsys); recs[len(recs)-1].Op != opHold {
		t.Fatalf("table %+v: want a held", recs)
	}
	raw.Forget(a.NodeId, 1)
	if _, _, known := e.fsys.nodes.resolved(a.NodeId); known {
		t.Fatal("unlinked a still taken after its FORGET")
	}
	// b again, by number only: LookupNode (the bridge's LOOKUP of ".").
	n := tinyHash.candidate("b", 0)
	var out fuse.EntryOut
	if st := raw.Lookup(nil, &fuse.InHeader{NodeId: n}, ".", &out); st != fuse.OK || out.NodeId != n || out.Size != 1 {
		t.Fatalf("lookup of number %d: %v, node %d size %d", n, st, out.NodeId, out.Size)
	}
}

// stagingWithTable returns a new staging directory whose node table is a
// copy of fixture, the table's path, and the fixture's content.
func stagingWithTable(t *testing.T, fixture string) (staging, path string, data []byte) {
	t.Helper()
	staging = t.TempDir()
	path = filepath.Join(staging, nodeTableDir, nodeTableName)
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return staging, path, data
}

// TestNodeTableFormat reads the checked-in version 1 table (every record
// kind, a key that is not UTF-8, a last record cut short), and checks
// what the rewrite of it says against a golden file.
func TestNodeTableFormat(t *testing.T) {
	t.Parallel()
	staging, path, _ := stagingWithTable(t, "testdata/nodetable-v1.jsonl")
	f, err := New(&countingAPI{}, Options{Bucket: testBucket, StagingDir: staging})
	if err != nil {
		t.Fatalf("New on the v1 fixture: %v", err)
	}
	defer func() { _ = f.Close() }()
	for ino, want := range map[uint64]struct{ key, from string }{
		1001: {"photos/c.jpg", ""},
		1002: {"photos/\xff.jpg", ""},
		1003: {"", ""},
		1005: {"docs/new.txt", "docs/old.txt"},
	} {
		key, from, known := f.nodes.resolved(ino)
		if !known || key != want.key || from != want.from {
			t.Fatalf("%d: %q from %q (known %v), want %q from %q", ino, key, from, known, want.key, want.from)
		}
	}
	if _, _, known := f.nodes.resolved(1004); known {
		t.Fatal("1004 was dropped")
	}
	dirs, _ := f.nodes.snapshot()
	if strings.Join(slices.Sorted(slices.Values(dirs)), ",") != ",photos/" {
		t.Fatalf("dirs %q", dirs)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden := "testdata/nodetable-v1.compact.jsonl"
	if *updateNodeTable {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("rewritten table:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

// TestNodeTableUnknownVersion: a table of a version this build does not
// read fails New with a clear error and is left as it is.
func TestNodeTableUnknownVersion(t *testing.T) {
	t.Parallel()
	staging, path, fixture := stagingWithTable(t, "testdata/nodetable-v99.jsonl")
	_, err := New(&countingAPI{}, Options{Bucket: testBucket, StagingDir: staging})
	if !errors.Is(err, ErrNodeTable) || !strings.Contains(err.Error(), "version 99 is not supported") {
		t.Fatalf("New: %v, want ErrNodeTable naming version 99", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, fixture) {
		t.Fatalf("table changed:\n%s", got)
	}
}

// TestNodeIDInherited: a server that took over renames and unlinks names
// whose dentries the kernel got from the server before it, before it used
// their numbers: the renamed node keeps its number under the new name
// (LOOKUP of "." finds it), and the unlinked one's number is held, so a
// new file of that name gets another.
func TestNodeIDInherited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, false)
	e.put("a", []byte("of a"))
	e.put("c", []byte("of c"))
	if err := e.fsys.ResetNodes(); err != nil {
		t.Fatal(err)
	}
	raw1 := bridge(e.fsys, 0)
	var a, c fuse.EntryOut
	if raw1.Lookup(nil, &fuse.InHeader{NodeId: 1}, "a", &a) != fuse.OK || raw1.Lookup(nil, &fuse.InHeader{NodeId: 1}, "c", &c) != fuse.OK {
		t.Fatal("lookups on the first server")
	}

	f2, err := New(e.api, Options{Bucket: testBucket, StagingDir: e.fsys.opts.StagingDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f2.Close() })
	raw2 := bridge(f2, 1)
	if st := raw2.Rename(nil, &fuse.RenameIn{InHeader: fuse.InHeader{NodeId: 1}, Newdir: 1}, "a", "b"); st != fuse.OK {
		t.Fatalf("rename: %v", st)
	}
	if st := raw2.Unlink(nil, &fuse.InHeader{NodeId: 1}, "c"); st != fuse.OK {
		t.Fatalf("unlink: %v", st)
	}
	var out fuse.EntryOut
	if st := raw2.Lookup(nil, &fuse.InHeader{NodeId: a.NodeId}, ".", &out); st != fuse.OK || out.Size != uint64(len("of a")) {
		t.Fatalf("lookup of the renamed number: %v, size %d", st, out.Size)
	}
	if key, _, _ := f2.nodes.resolved(a.NodeId); key != "b" {
		t.Fatalf("renamed number resolves to %q, want b", key)
	}
	var created fuse.CreateOut
	if st := raw2.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: 1}, Flags: syscall.O_WRONLY | syscall.O_CREAT, Mode: 0o644}, "c", &created); st != fuse.OK {
		t.Fatalf("create: %v", st)
	}
	if created.NodeId == c.NodeId {
		t.Fatalf("new c got the number %d the kernel holds for the unlinked one", c.NodeId)
	}
	raw2.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: created.NodeId}, Fh: created.Fh})
}
