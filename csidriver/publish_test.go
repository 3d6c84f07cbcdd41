package csidriver

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/csidriver/supervisor"
)

func TestPublishDecision(t *testing.T) {
	for _, c := range []struct {
		name                            string
		found, dead, mounted, corrupted bool
		want                            publishAction
	}{
		{"new target", false, false, false, false, publishMount},
		{"live mount", true, false, true, false, publishRepublish},
		{"live server, slow stat", true, false, true, true, publishRepublish},
		{"dead server, mount left", true, true, true, true, publishMount},
		{"dead server, not mounted", true, true, false, false, publishMount},
		{"listed, not mounted", true, false, false, false, publishMount},
		{"stale mount after a reboot", false, false, true, true, publishMount},
		{"live mount being handed over", false, false, true, false, publishRetry},
	} {
		if got := publishDecision(c.found, c.dead, c.mounted, c.corrupted); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestTargetLocks: calls for one target run one at a time, calls for
// others do not wait for them, and no lock is left once they are done.
func TestTargetLocks(t *testing.T) {
	var l targetLocks
	var wg sync.WaitGroup
	inside := map[string]*atomic.Int32{}
	for i := range 50 {
		inside[fmt.Sprint("t", i%5)] = &atomic.Int32{}
	}
	for i := range 500 {
		target := fmt.Sprint("t", i%5)
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := l.lock(target)
			if n := inside[target].Add(1); n != 1 {
				t.Errorf("%d calls inside %s at once", n, target)
			}
			inside[target].Add(-1)
			unlock()
		}()
	}
	// A call for another target goes through while t0 is held.
	unlock := l.lock("t0")
	done := make(chan struct{})
	go func() { l.lock("other")(); close(done) }()
	<-done
	unlock()
	wg.Wait()
	if n := l.held(); n != 0 {
		t.Errorf("%d target locks left", n)
	}
}

// TestPublishCapsStagingDisk: a publish whose otherOpts ask for more
// write cache or staging disk than the node plugin allows is refused with
// PermissionDenied naming the option and the flag, and starts no server;
// one that sets nothing gets the defaults lowered to the caps.
func TestPublishCapsStagingDisk(t *testing.T) {
	t.Parallel()
	runner := &fakeRunner{mounts: map[string]supervisor.Info{}}
	c := testDriver(t, Options{NodeID: "n", Runner: runner, Policy: &Policy{InlineVolumes: true, MaxWriteCacheMiB: 128, MaxStagingMiB: 512}})
	publish := func(target, opts string) error {
		_, err := c.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: "pv", TargetPath: target,
			VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}},
			VolumeContext: map[string]string{"bucket": "bkt", "url": "http://127.0.0.1:1", "otherOpts": opts},
			Secrets:       map[string]string{"akId": "AKID", "akSecret": "SECRET"}})
		return err
	}
	dir := t.TempDir()
	err := publish(filepath.Join(dir, "big"), "-o write_cache_mb=65536")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "write_cache_mb=65536 is above the node plugin's maximum of 128 (rekey-csi --max-write-cache-mb)") {
		t.Fatalf("publish with write_cache_mb=65536 under a cap of 128: %v, want PermissionDenied naming the option and the flag", err)
	}
	err = publish(filepath.Join(dir, "staging"), "-o staging_mb=4096")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--max-staging-mb") {
		t.Fatalf("publish with staging_mb=4096 under a cap of 512: %v, want PermissionDenied", err)
	}
	if infos, _ := runner.List(context.Background()); len(infos) != 0 {
		t.Fatalf("refused publishes started %d servers", len(infos))
	}
	if err := publish(filepath.Join(dir, "ok"), "-o staging_mb=256"); err != nil {
		t.Fatalf("publish within the caps: %v", err)
	}
	if err := publish(filepath.Join(dir, "defaults"), ""); err != nil {
		t.Fatalf("publish with defaults: %v", err)
	}
	got := map[string]string{}
	infos, _ := runner.List(context.Background())
	for _, in := range infos {
		got[filepath.Base(in.Spec.Target)] = in.Spec.Options
	}
	for target, want := range map[string]string{"ok": "write_cache_mb=128,staging_mb=256", "defaults": "write_cache_mb=128,staging_mb=512"} {
		if !strings.Contains(got[target], want) {
			t.Errorf("server of %s runs with options %q, want them to include %q", target, got[target], want)
		}
	}
}
