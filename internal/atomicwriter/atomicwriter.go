// Package atomicwriter reproduces how kubelet updates a projected Secret,
// ConfigMap or service-account token volume (kubernetes
// pkg/volume/util/atomic_writer.go), so that tests and the demo can drive a
// watcher exactly the way a real pod sees its volume change.
//
// The visible files of the target directory are symbolic links into the
// ..data symlink, which points at a hidden timestamped directory holding the
// real files:
//
//	<dir>/akId                              -> ..data/akId
//	<dir>/..data                            -> ..2026_01_02_15_04_05.123456789
//	<dir>/..2026_01_02_15_04_05.123456789/akId
//
// An update writes a complete new timestamped directory, points a new
// ..data_tmp symlink at it, renames ..data_tmp over ..data (the one atomic
// step), creates links for new top-level names, removes links of names that
// are gone, and deletes the old timestamped directory.
package atomicwriter

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// DataDirName is the symlink to the current timestamped directory.
	DataDirName = "..data"
	// NewDataDirName is the temporary symlink renamed over DataDirName.
	NewDataDirName = "..data_tmp"

	maxFileNameLength = 255
	maxPathLength     = 4096
)

// ErrInvalidPath is wrapped by Write's error for a payload path kubelet
// would refuse.
var ErrInvalidPath = errors.New("atomicwriter: invalid path")

// File is the content and mode of one projected file.
type File struct {
	Data []byte
	Mode os.FileMode // 0 means 0644, kubelet's default for Secrets is 0644 too
}

// Writer projects payloads into one target directory. It is not safe for
// concurrent use, like kubelet's (kubelet serializes writes per volume).
type Writer struct {
	dir string

	// BeforeSwap, if set, runs after the new timestamped directory has been
	// written and before ..data is switched to it. Tests use it to observe
	// the window in which new files exist but are not yet visible.
	BeforeSwap func(tsDir string)
}

// New returns a Writer for dir, which must exist.
func New(dir string) (*Writer, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("atomicwriter: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("atomicwriter: %s is not a directory", dir)
	}
	return &Writer{dir: dir}, nil
}

// Dir is the target directory.
func (w *Writer) Dir() string { return w.dir }

// WriteStrings is Write for text payloads with mode 0644.
func (w *Writer) WriteStrings(payload map[string]string) error {
	p := make(map[string]File, len(payload))
	for k, v := range payload {
		p[k] = File{Data: []byte(v)}
	}
	return w.Write(p)
}

// Write projects payload into the target directory in kubelet's steps. A
// payload equal to what is projected already changes nothing on disk.
func (w *Writer) Write(payload map[string]File) error {
	// (1) validate the payload.
	clean := make(map[string]File, len(payload))
	for p, f := range payload {
		if err := validatePath(p); err != nil {
			return err
		}
		clean[filepath.Clean(p)] = f
	}

	// (2) find the current timestamped directory.
	dataDirPath := filepath.Join(w.dir, DataDirName)
	oldTsDir, err := os.Readlink(dataDirPath)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("atomicwriter: read %s: %w", DataDirName, err)
		}
		oldTsDir = ""
	}
	oldTsPath := filepath.Join(w.dir, oldTsDir)

	var pathsToRemove map[string]bool
	if oldTsDir != "" {
		// (3) paths of the old version no longer in the payload.
		pathsToRemove, err = w.pathsToRemove(clean, oldTsPath)
		if err != nil {
			return err
		}
		// (4) is there anything to write at all?
		should, err := shouldWritePayload(clean, oldTsPath)
		if err != nil {
			return err
		}
		if !should && len(pathsToRemove) == 0 {
			// Up to date; kubelet still makes sure the visible links exist.
			return w.createUserVisibleFiles(clean)
		}
	}

	// (5) a new timestamped directory.
	tsDir, err := os.MkdirTemp(w.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("atomicwriter: create timestamped directory: %w", err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil { //nolint:gosec // kubelet's mode: the pod's users must traverse it
		return fmt.Errorf("atomicwriter: chmod timestamped directory: %w", err)
	}
	tsDirName := filepath.Base(tsDir)

	// (6) the payload into it.
	if err := writePayloadToDir(clean, tsDir); err != nil {
		_ = os.RemoveAll(tsDir)
		return err
	}
	if w.BeforeSwap != nil {
		w.BeforeSwap(tsDir)
	}

	// (7) ..data_tmp -> new directory, (8) renamed over ..data: the atomic step.
	newDataDirPath := filepath.Join(w.dir, NewDataDirName)
	if err := os.Symlink(tsDirName, newDataDirPath); err != nil {
		_ = os.RemoveAll(tsDir)
		return fmt.Errorf("atomicwriter: symlink %s: %w", NewDataDirName, err)
	}
	if err := os.Rename(newDataDirPath, dataDirPath); err != nil {
		_ = os.Remove(newDataDirPath)
		_ = os.RemoveAll(tsDir)
		return fmt.Errorf("atomicwriter: rename %s: %w", NewDataDirName, err)
	}

	// (9) links for new top-level names.
	if err := w.createUserVisibleFiles(clean); err != nil {
		return err
	}
	// (10) links of names that are gone.
	if err := w.removeUserVisiblePaths(pathsToRemove); err != nil {
		return err
	}
	// (11) the old timestamped directory.
	if oldTsDir != "" {
		if err := os.RemoveAll(oldTsPath); err != nil {
			return fmt.Errorf("atomicwriter: remove old data directory: %w", err)
		}
	}
	return nil
}

// validatePath applies kubelet's rules: relative, no ".." element, not
// starting with "..", bounded lengths.
func validatePath(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPath)
	}
	if filepath.IsAbs(p) {
		return fmt.Errorf("%w: %q is absolute", ErrInvalidPath, p)
	}
	if len(p) > maxPathLength {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidPath, maxPathLength)
	}
	items := strings.Split(p, string(os.PathSeparator))
	for _, item := range items {
		if item == ".." {
			return fmt.Errorf("%w: %q contains '..'", ErrInvalidPath, p)
		}
		if len(item) > maxFileNameLength {
			return fmt.Errorf("%w: a name is longer than %d characters", ErrInvalidPath, maxFileNameLength)
		}
	}
	if strings.HasPrefix(items[0], "..") && len(items[0]) > 2 {
		return fmt.Errorf("%w: %q starts with '..'", ErrInvalidPath, p)
	}
	return nil
}

func shouldWritePayload(payload map[string]File, oldTsDir string) (bool, error) {
	for p, f := range payload {
		path := filepath.Join(oldTsDir, p)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		onDisk, err := os.ReadFile(filepath.Clean(path))
		if err != nil {
			return false, fmt.Errorf("atomicwriter: %w", err)
		}
		if !bytes.Equal(onDisk, f.Data) {
			return true, nil
		}
	}
	return false, nil
}

// pathsToRemove walks the old timestamped directory and returns the paths
// that the payload no longer has.
func (w *Writer) pathsToRemove(payload map[string]File, oldTsDir string) (map[string]bool, error) {
	paths := map[string]bool{}
	err := filepath.WalkDir(oldTsDir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(path, oldTsDir), string(os.PathSeparator))
		if rel != "" {
			paths[rel] = true
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("atomicwriter: walk old data directory: %w", err)
	}
	for file := range payload {
		// Keep every parent of a payload path: non-empty directories stay.
		for sub := file; sub != "" && sub != "."; sub = filepath.Dir(sub) {
			delete(paths, sub)
		}
	}
	return paths, nil
}

func writePayloadToDir(payload map[string]File, dir string) error {
	for p, f := range payload {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil { //nolint:gosec // kubelet's mode
			return fmt.Errorf("atomicwriter: %w", err)
		}
		if err := os.WriteFile(full, f.Data, mode); err != nil {
			return fmt.Errorf("atomicwriter: %w", err)
		}
		// WriteFile's mode is subject to the umask; kubelet sets it exactly.
		if err := os.Chmod(full, mode); err != nil {
			return fmt.Errorf("atomicwriter: %w", err)
		}
	}
	return nil
}

// createUserVisibleFiles links every top-level payload name into ..data:
// "a" -> "..data/a", and for "d/f" the directory "d" -> "..data/d".
func (w *Writer) createUserVisibleFiles(payload map[string]File) error {
	for p := range payload {
		name, _, _ := strings.Cut(p, string(os.PathSeparator))
		visible := filepath.Join(w.dir, name)
		if _, err := os.Readlink(visible); err != nil && errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(filepath.Join(DataDirName, name), visible); err != nil {
				return fmt.Errorf("atomicwriter: %w", err)
			}
		}
	}
	return nil
}

// removeUserVisiblePaths removes the links of top-level names that are gone;
// deeper paths vanish with the old timestamped directory.
func (w *Writer) removeUserVisiblePaths(paths map[string]bool) error {
	var errs []error
	for p := range paths {
		if strings.Contains(p, string(os.PathSeparator)) {
			continue
		}
		if err := os.Remove(filepath.Join(w.dir, p)); err != nil {
			errs = append(errs, fmt.Errorf("atomicwriter: prune %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
