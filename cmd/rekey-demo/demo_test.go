package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestDemo runs the whole demo, with fewer rotations, against freshly
// built binaries: real FUSE mounts, so it needs root and /dev/fuse.
func TestDemo(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); os.Geteuid() != 0 || err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and /dev/fuse")
		}
		t.Skip("needs root and /dev/fuse")
	}
	bin := t.TempDir()
	for _, b := range []string{"rekey-fuse", "rekey-sidecar", "rekey-csi"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b), "rekey.dev/rekey/cmd/"+b)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b, err, out)
		}
	}
	cfg := Config{FuseBinary: filepath.Join(bin, "rekey-fuse"), SidecarBinary: filepath.Join(bin, "rekey-sidecar"),
		CSIBinary: filepath.Join(bin, "rekey-csi"), Rotations: 4, Interval: 100 * time.Millisecond, Workers: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.failures() > 0 || sum.Rotations != 4 || sum.Ops == 0 {
		t.Fatalf("summary: %d rotations, %d operations, %d failures: %v", sum.Rotations, sum.Ops, sum.failures(), sum.Errors)
	}
	if sum.ViaPath[pathRepublish] != 2 || sum.ViaPath[pathSidecar] != 2 {
		t.Errorf("rotations by path = %v, want 2 via republish and 2 via sidecar", sum.ViaPath)
	}
}

func TestSummaryLastLine(t *testing.T) {
	var b bytes.Buffer
	Summary{Rotations: 10, Ops: 498, P99: 55700 * time.Microsecond, ViaPath: map[string]int{pathRepublish: 5, pathSidecar: 5}}.print(&b)
	lines := bytes.Split(bytes.TrimSpace(b.Bytes()), []byte("\n"))
	want := regexp.MustCompile(`^demo: 10 rotations, 498 operations, 0 failed, swap p99 55\.7 ms$`)
	if last := lines[len(lines)-1]; !want.Match(last) {
		t.Errorf("last line = %q, want %s", last, want)
	}
	if got := string(lines[len(lines)-2]); got != "demo: NodePublishVolume 0.0 ms, NodeUnpublishVolume 0.0 ms; 5 rotations via republish, 5 via sidecar" {
		t.Errorf("line before = %q", got)
	}
}
