package atomicwriter_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"rekey.dev/rekey/internal/atomicwriter"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicwriter.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteStrings(map[string]string{"akId": "A1", "akSecret": "S1"}); err != nil {
		t.Fatal(err)
	}
	first, err := os.Readlink(filepath.Join(dir, atomicwriter.DataDirName))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$`).MatchString(first) {
		t.Errorf("timestamped directory %q does not look like kubelet's", first)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "akId")); l != "..data/akId" {
		t.Errorf("akId links to %q, want ..data/akId", l)
	}

	// Unchanged payload: nothing moves.
	if err := w.WriteStrings(map[string]string{"akId": "A1", "akSecret": "S1"}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, atomicwriter.DataDirName)); again != first {
		t.Errorf("unchanged payload switched ..data from %s to %s", first, again)
	}

	// Changed payload with a removed and an added name.
	var sawNew bool
	w.BeforeSwap = func(tsDir string) {
		cur, _ := os.ReadFile(filepath.Join(dir, "akId"))
		sawNew = string(cur) != "A1"
	}
	if err := w.WriteStrings(map[string]string{"akId": "A2", "other": "x"}); err != nil {
		t.Fatal(err)
	}
	if sawNew {
		t.Error("new content visible before the swap")
	}
	second, _ := os.Readlink(filepath.Join(dir, atomicwriter.DataDirName))
	if second == first {
		t.Fatal("..data not switched")
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old timestamped directory still there: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "akSecret")); !os.IsNotExist(err) {
		t.Errorf("removed name still linked: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "akId")); string(b) != "A2" {
		t.Errorf("akId = %q, want A2", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, atomicwriter.NewDataDirName)); !os.IsNotExist(err) {
		t.Errorf("%s left behind", atomicwriter.NewDataDirName)
	}
	for _, bad := range []string{"/abs", "../x", "..hidden", "a/../b"} {
		if err := w.WriteStrings(map[string]string{bad: "x"}); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}
