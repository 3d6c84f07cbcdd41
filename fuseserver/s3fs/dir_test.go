package s3fs

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

// TestReaddirLarge lists 10,000 entries. The objects are seeded straight
// into a gofakes3 backend: creating them through signed HTTP PUTs takes a
// minute under -race. The filesystem still lists them over HTTP.
func TestReaddirLarge(t *testing.T) {
	t.Parallel()
	const n = 10000
	backend := s3mem.New()
	ctx := t.Context()
	if err := backend.CreateBucket(ctx, testBucket); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := backend.PutObject(ctx, testBucket, fmt.Sprintf("big/f%05d", i), nil, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := backend.PutObject(ctx, testBucket, "big/sub/x", nil, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(hs.Close)
	api := &countingAPI{API: s3.New(s3.Options{
		BaseEndpoint: aws.String(hs.URL),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  aws.AnonymousCredentials{},
	})}
	fsys, err := New(api, Options{Bucket: testBucket, StagingDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fsys.Close() })
	dir := t.TempDir()
	srv, err := Mount(dir, fsys, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, srv) })

	listsBefore := api.lists.Load()
	ents, err := os.ReadDir(dir + "/big")
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	if len(ents) != n+1 {
		t.Fatalf("ReadDir: %d entries, want %d", len(ents), n+1)
	}
	// 10001 entries at 1000 per page, plus the lookup of "big" itself.
	if lists := api.lists.Load() - listsBefore; lists > 13 {
		t.Fatalf("ReadDir made %d list requests", lists)
	}
	headsBefore := api.heads.Load()
	for i, ent := range ents {
		fi, err := os.Lstat(dir + "/big/" + ent.Name())
		if err != nil {
			t.Fatalf("Lstat %s: %v", ent.Name(), err)
		}
		if ent.Name() == "sub" {
			if !fi.IsDir() {
				t.Fatalf("sub is not a directory")
			}
			continue
		}
		if want := fmt.Sprintf("f%05d", i); ent.Name() != want || fi.Size() != 1 || !fi.Mode().IsRegular() {
			t.Fatalf("entry %d: %s size %d mode %v; want %s size 1 regular", i, ent.Name(), fi.Size(), fi.Mode(), want)
		}
	}
	if heads := api.heads.Load() - headsBefore; heads != 0 {
		t.Fatalf("Lstat after ReadDir made %d HEAD requests, want 0", heads)
	}
}

func TestDirectories(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	e.put("a/b/c", []byte("deep"))
	e.put("marker/", []byte("not empty"))
	// Before the first listing: objects put behind the mount's back into a
	// listed directory show only once the listing cache expires.
	e.put("r/old.txt", []byte("payload"))
	_, err := e.admin.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(testBucket), Key: aws.String("typed/"), Body: strings.NewReader(""), ContentType: aws.String("text/plain"),
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("implicit and marker dirs", func(t *testing.T) {
		for _, p := range []string{"a", "a/b", "marker", "typed"} {
			fi, err := os.Stat(e.path(p))
			if err != nil || !fi.IsDir() {
				t.Fatalf("stat %s: %v, %v; want a directory", p, fi, err)
			}
			if fi.Mode().Perm() != 0o755 {
				t.Fatalf("%s mode %v, want 0755", p, fi.Mode())
			}
		}
		fi, err := os.Stat(e.path("a/b/c"))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != 4 || fi.Mode().Perm() != 0o644 {
			t.Fatalf("stat a/b/c: %v, %v", fi, err)
		}
		assertDir(t, e.path(""), "a", "marker", "r", "typed")
		assertDir(t, e.path("a"), "b")
		assertDir(t, e.path("marker")) // its own marker is not an entry
	})

	t.Run("mkdir rmdir", func(t *testing.T) {
		if err := os.Mkdir(e.path("made"), 0o755); err != nil {
			t.Fatal(err)
		}
		if d, err := os.Open(e.path("made")); err != nil || d.Sync() != nil || d.Close() != nil {
			t.Fatalf("fsync of a directory failed")
		}
		if got := e.mustGet("made/"); len(got) != 0 {
			t.Fatalf("marker body %q", got)
		}
		if err := os.WriteFile(e.path("made/f"), []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(e.path("made")); !errors.Is(err, syscall.ENOTEMPTY) {
			t.Fatalf("rmdir non-empty: %v, want ENOTEMPTY", err)
		}
		if err := os.Remove(e.path("made/f")); err != nil {
			t.Fatal(err)
		}
		e.assertAbsent("made/f")
		if _, err := os.Stat(e.path("made/f")); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("stat after unlink: %v", err)
		}
		if err := os.Remove(e.path("made")); err != nil {
			t.Fatalf("rmdir: %v", err)
		}
		e.assertAbsent("made/")
		if _, err := os.Stat(e.path("made")); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("stat after rmdir: %v", err)
		}
		// A new file under the same name is visible at once.
		if err := os.WriteFile(e.path("made"), []byte("now a file"), 0o644); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(e.path("made")); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("stat recreated: %v %v", fi, err)
		}
	})

	t.Run("rename file", func(t *testing.T) {
		if err := os.Rename(e.path("r/old.txt"), e.path("r/new.txt")); err != nil {
			t.Fatal(err)
		}
		e.assertAbsent("r/old.txt")
		if got := e.mustGet("r/new.txt"); string(got) != "payload" {
			t.Fatalf("renamed object %q", got)
		}
		if _, err := os.Stat(e.path("r/old.txt")); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("old name: %v", err)
		}
		if got, err := os.ReadFile(e.path("r/new.txt")); err != nil || string(got) != "payload" {
			t.Fatalf("read renamed: %q %v", got, err)
		}
	})

	t.Run("rename dirty staged file", func(t *testing.T) {
		f, err := os.Create(e.path("r/dirty"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("staged")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(e.path("r/dirty"), e.path("r/moved")); err != nil {
			t.Fatal(err)
		}
		if got := e.mustGet("r/moved"); string(got) != "staged" {
			t.Fatalf("moved object %q", got)
		}
		if _, err := f.Write([]byte("+more")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		e.assertAbsent("r/dirty")
		if got := e.mustGet("r/moved"); string(got) != "staged+more" {
			t.Fatalf("moved object after close %q", got)
		}
	})

	t.Run("rename dir", func(t *testing.T) {
		if err := os.MkdirAll(e.path("src/sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"src/one", "src/sub/two"} {
			if err := os.WriteFile(e.path(p), []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		e.put("src/implicit/three", []byte("src/implicit/three"))
		if err := os.Rename(e.path("src"), e.path("dst")); err != nil {
			t.Fatal(err)
		}
		if got := e.keys("src"); len(got) != 0 {
			t.Fatalf("keys left under src: %v", got)
		}
		want := []string{"dst/", "dst/one", "dst/implicit/three", "dst/sub/", "dst/sub/two"} // "src/" was a marker (MkdirAll)
		got := e.keys("dst")
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Fatalf("keys under dst: %v, want %v", got, want)
		}
		for _, p := range []string{"one", "sub/two", "implicit/three"} {
			if b, err := os.ReadFile(e.path("dst/" + p)); err != nil || string(b) != "src/"+p {
				t.Fatalf("read dst/%s: %q %v", p, b, err)
			}
		}
		if _, err := os.Stat(e.path("src")); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("stat src after rename: %v", err)
		}
	})
}

func assertDir(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir %s: %v", dir, err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ReadDir %s = %v, want %v", dir, got, want)
	}
}

func TestPrefix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{Prefix: "/team/data"}, true)
	e.put("team/data/x", []byte("x"))
	e.put("team/data/d/y", []byte("y"))
	e.put("team/other/z", []byte("z"))
	e.put("outside", []byte("o"))
	assertDir(t, e.path(""), "d", "x")
	if got, err := os.ReadFile(e.path("d/y")); err != nil || string(got) != "y" {
		t.Fatalf("read d/y: %q %v", got, err)
	}
	if _, err := os.Stat(e.path("outside")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat outside: %v", err)
	}
	if err := os.WriteFile(e.path("new.txt"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.path("nd"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.mustGet("team/data/new.txt")
	e.mustGet("team/data/nd/")
	e.assertAbsent("new.txt")
}
