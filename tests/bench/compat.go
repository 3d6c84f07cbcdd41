package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// compatCase is one POSIX behaviour, run in its own fresh directory of a
// mount. It returns what happened in a few words ("ok" when the file system
// behaved as POSIX says).
type compatCase struct {
	name string
	run  func(dir string) string
}

var compatCases = []compatCase{
	{"create, write, close, read back", func(d string) string {
		p := filepath.Join(d, "f")
		return check(os.WriteFile(p, []byte("hello"), 0o644), func() string { return content(p, "hello") })
	}},
	{"append (O_APPEND) to an existing file", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "hello"); err != nil {
			return errText(err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return errText(err)
		}
		_, err = f.WriteString(" world")
		return check(closeWith(f, err), func() string { return content(p, "hello world") })
	}},
	{"overwrite in the middle (pwrite)", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "0123456789"); err != nil {
			return errText(err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return errText(err)
		}
		_, err = f.WriteAt([]byte("xy"), 4)
		return check(closeWith(f, err), func() string { return content(p, "0123xy6789") })
	}},
	{"truncate shorter, then longer (zeros)", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "0123456789"); err != nil {
			return errText(err)
		}
		if err := os.Truncate(p, 4); err != nil {
			return errText(err)
		}
		if err := os.Truncate(p, 6); err != nil {
			return errText(err)
		}
		return content(p, "0123\x00\x00")
	}},
	{"size visible while writing (before close)", func(d string) string {
		p := filepath.Join(d, "f")
		f, err := os.Create(p)
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		if _, err := f.WriteString("12345"); err != nil {
			return errText(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			return errText(err)
		}
		if st.Size() != 5 {
			return fmt.Sprintf("size %d", st.Size())
		}
		return "ok"
	}},
	{"new file listed while still open", func(d string) string {
		f, err := os.Create(filepath.Join(d, "open"))
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		return listed(d, "open", true)
	}},
	{"unlinked file gone from listing", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "x"); err != nil {
			return errText(err)
		}
		if err := os.Remove(p); err != nil {
			return errText(err)
		}
		return listed(d, "f", false)
	}},
	{"read an open file after unlink", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "still here"); err != nil {
			return errText(err)
		}
		f, err := os.Open(p)
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		if err := os.Remove(p); err != nil {
			return errText(err)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return errText(err)
		}
		if string(b) != "still here" {
			return fmt.Sprintf("read %q", b)
		}
		return "ok"
	}},
	{"rename file over an existing one", func(d string) string {
		a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
		if err := writeSettled(a, "new"); err != nil {
			return errText(err)
		}
		if err := writeSettled(b, "old"); err != nil {
			return errText(err)
		}
		if err := os.Rename(a, b); err != nil {
			return errText(err)
		}
		if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
			return "source still there"
		}
		return content(b, "new")
	}},
	{"rename a directory with files", func(d string) string {
		src := filepath.Join(d, "src")
		if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
			return errText(err)
		}
		for _, n := range []string{"1", "2", "sub/3"} {
			if err := writeSettled(filepath.Join(src, n), n); err != nil {
				return errText(err)
			}
		}
		if err := os.Rename(src, filepath.Join(d, "dst")); err != nil {
			return errText(err)
		}
		return content(filepath.Join(d, "dst", "sub", "3"), "sub/3")
	}},
	{"rmdir of a non-empty directory", func(d string) string {
		if err := writeSettled(filepath.Join(d, "x"), "x"); err != nil {
			return errText(err)
		}
		return errText(syscall.Rmdir(d))
	}},
	{"mkdir of an existing directory", func(d string) string {
		return errText(os.Mkdir(d, 0o755))
	}},
	{"O_CREAT|O_EXCL of an existing file", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "x"); err != nil {
			return errText(err)
		}
		_, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		return errText(err)
	}},
	{"large sparse file: read inside the hole", func(d string) string {
		p := filepath.Join(d, "sparse")
		f, err := os.Create(p)
		if err != nil {
			return errText(err)
		}
		_, err = f.WriteAt([]byte{1}, 64<<20)
		if err := closeWith(f, err); err != nil {
			return errText(err)
		}
		dropCaches()
		f, err = os.Open(p)
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 32<<20); err != nil {
			return errText(err)
		}
		if !bytes.Equal(buf, make([]byte, 4096)) {
			return "non-zero bytes"
		}
		return "ok"
	}},
	{"fsync of a directory", func(d string) string {
		f, err := os.Open(d)
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		return errText(f.Sync())
	}},
	{"hard link", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "x"); err != nil {
			return errText(err)
		}
		return errText(os.Link(p, filepath.Join(d, "l")))
	}},
	{"symlink", func(d string) string {
		return errText(os.Symlink("target", filepath.Join(d, "s")))
	}},
	{"chmod 0600 kept", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "x"); err != nil {
			return errText(err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return errText(err)
		}
		dropCaches()
		st, err := os.Stat(p)
		if err != nil {
			return errText(err)
		}
		if st.Mode().Perm() != 0o600 {
			return fmt.Sprintf("accepted, mode stays %#o", st.Mode().Perm())
		}
		return "ok"
	}},
	{"utimens (touch -d 2001-01-01) kept", func(d string) string {
		p := filepath.Join(d, "f")
		if err := writeSettled(p, "x"); err != nil {
			return errText(err)
		}
		when := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
		if err := os.Chtimes(p, when, when); err != nil {
			return errText(err)
		}
		dropCaches()
		st, err := os.Stat(p)
		if err != nil {
			return errText(err)
		}
		if !st.ModTime().Equal(when) {
			return "accepted, mtime not kept"
		}
		return "ok"
	}},
}

// runCompat runs every case on the mount at dir and returns the outcomes.
func runCompat(dir, tool string) []string {
	out := make([]string, len(compatCases))
	for i, c := range compatCases {
		d := filepath.Join(dir, "compat-"+tool, fmt.Sprintf("c%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			out[i] = "setup: " + errText(err)
			continue
		}
		out[i] = c.run(d)
	}
	return out
}

func printCompat(server string, order []string, results map[string][]string) {
	fmt.Printf("\n### POSIX behaviour on %s\n\n| case | %s |\n|---|%s\n", server, strings.Join(order, " | "), strings.Repeat("---|", len(order)))
	for i, c := range compatCases {
		cells := make([]string, len(order))
		for j, tool := range order {
			cells[j] = results[tool][i]
		}
		fmt.Printf("| %s | %s |\n", c.name, strings.Join(cells, " | "))
	}
}

// writeSettled writes a file and closes it (so that it is uploaded).
func writeSettled(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

func closeWith(f *os.File, err error) error {
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func check(err error, then func() string) string {
	if err != nil {
		return errText(err)
	}
	return then()
}

func content(p, want string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return errText(err)
	}
	if string(b) != want {
		return fmt.Sprintf("content %q", b)
	}
	return "ok"
}

func listed(dir, name string, want bool) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errText(err)
	}
	found := false
	for _, e := range ents {
		found = found || e.Name() == name
	}
	if found != want {
		return fmt.Sprintf("listed=%v", found)
	}
	return "ok"
}

// errText names the errno of err ("ok" for nil).
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		for name, e := range map[string]syscall.Errno{
			"ENOENT": syscall.ENOENT, "EEXIST": syscall.EEXIST, "ENOTEMPTY": syscall.ENOTEMPTY, "ENOTSUP": syscall.ENOTSUP,
			"EPERM": syscall.EPERM, "EACCES": syscall.EACCES, "EIO": syscall.EIO, "EINVAL": syscall.EINVAL,
			"ENOSYS": syscall.ENOSYS, "EXDEV": syscall.EXDEV, "EROFS": syscall.EROFS, "EISDIR": syscall.EISDIR,
		} {
			if errno == e {
				return name
			}
		}
		return errno.Error()
	}
	return err.Error()
}
