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
		CSIBinary: filepath.Join(bin, "rekey-csi"), Rotations: 4, Kills: 2, Interval: 100 * time.Millisecond, Workers: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.failures() > 0 || sum.Rotations != 4 || sum.Ops == 0 || sum.Kills != 2 || sum.Resumed != 2 {
		t.Fatalf("summary: %d rotations, %d of %d kills resumed, %d operations, %d failures: %v",
			sum.Rotations, sum.Resumed, sum.Kills, sum.Ops, sum.failures(), sum.Errors)
	}
	if sum.ResumeMax <= 0 || sum.ResumeP50 > sum.ResumeMax {
		t.Errorf("resume times: p50 %s, max %s", sum.ResumeP50, sum.ResumeMax)
	}
	if sum.ViaPath[pathRepublish] != 2 || sum.ViaPath[pathSidecar] != 2 {
		t.Errorf("rotations by path = %v, want 2 via republish and 2 via sidecar", sum.ViaPath)
	}
}

func TestSummaryLastLine(t *testing.T) {
	var b bytes.Buffer
	Summary{Rotations: 10, Kills: 2, Resumed: 2, Ops: 498, P99: 55700 * time.Microsecond, ResumeP50: 41200 * time.Microsecond,
		ResumeMax: 118 * time.Millisecond, ViaPath: map[string]int{pathRepublish: 5, pathSidecar: 5}}.print(&b)
	lines := bytes.Split(bytes.TrimSpace(b.Bytes()), []byte("\n"))
	want := regexp.MustCompile(`^demo: 10 rotations, 2 resumed, 498 operations, 0 failed, swap p99 55\.7 ms$`)
	if last := lines[len(lines)-1]; !want.Match(last) {
		t.Errorf("last line = %q, want %s", last, want)
	}
	if got := string(lines[len(lines)-2]); got != "demo: FUSE server killed 2 times under load, resumed 2 times; kill to first answered read: p50 41.2 ms, max 118.0 ms" {
		t.Errorf("resume line = %q", got)
	}
	if got := string(lines[len(lines)-3]); got != "demo: NodePublishVolume 0.0 ms, NodeUnpublishVolume 0.0 ms; 5 rotations via republish, 5 via sidecar" {
		t.Errorf("paths line = %q", got)
	}
}

func TestKillPoints(t *testing.T) {
	for _, c := range []struct {
		rotations, kills int
		want             []int
	}{
		{10, 2, []int{3, 7}},
		{4, 2, []int{1, 3}},
		{10, 0, nil},
		{1, 1, []int{1}},
		{2, 2, []int{1, 2}},
		{3, 3, []int{1, 2, 3}},
		{5, 4, []int{1, 2, 3, 4}},
	} {
		got := killPoints(c.rotations, c.kills)
		if len(got) != len(c.want) {
			t.Errorf("killPoints(%d, %d) = %v, want %v", c.rotations, c.kills, got, c.want)
			continue
		}
		for _, p := range c.want {
			if !got[p] {
				t.Errorf("killPoints(%d, %d) = %v, want %v", c.rotations, c.kills, got, c.want)
			}
		}
	}
	for r := 1; r <= 30; r++ {
		for k := 0; k <= r; k++ {
			got := killPoints(r, k)
			if len(got) != k {
				t.Errorf("killPoints(%d, %d) = %v: %d points", r, k, got, len(got))
			}
			for p := range got {
				if p < 1 || p > r {
					t.Errorf("killPoints(%d, %d) = %v: %d out of range", r, k, got, p)
				}
			}
		}
	}
}
