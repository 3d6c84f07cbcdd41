package sanity

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
)

// BenchmarkNodePublishVolume measures NodePublishVolume end to end — parse,
// pre-mount check against the loopback S3 server, mount(2), SCM_RIGHTS
// hand-off to the supervisor, rekey-fuse start until it serves — one
// publish at a time, each followed by an unpublish that is not timed.
// Run with -benchtime=100x for the 100 sequential publishes of the docs.
func BenchmarkNodePublishVolume(b *testing.B) {
	needRoot(b)
	e := newEnv(b)
	endpoint, _ := inProcessDriver(b, logr.Discard())
	c := nodeClient(b, endpoint)
	dir := shortTempDir(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		target := filepath.Join(dir, fmt.Sprintf("t%d", i))
		req := &csi.NodePublishVolumeRequest{VolumeId: fmt.Sprintf("pv-%d", i), TargetPath: target,
			VolumeCapability: mountCapability(), VolumeContext: e.volumeContext(), Secrets: secretsOf(e.keys)}
		start := time.Now()
		if _, err := c.NodePublishVolume(ctx, req); err != nil {
			b.Fatalf("publish %d: %v", i, err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if _, err := c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target}); err != nil {
			b.Fatalf("unpublish %d: %v", i, err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkNodePublishWith200Mounts measures NodePublishVolume while the
// node already has many mounts: 200 publishes that all stay mounted (200
// real rekey-fuse processes), then the 200 unpublishes, untimed. p99 over
// the last 50 against the first 50 shows whether a publish gets slower
// with the number of mounts (it did while every publish listed all of
// them). -benchtime is ignored: one round of 200.
func BenchmarkNodePublishWith200Mounts(b *testing.B) {
	needRoot(b)
	const n = 200
	e := newEnv(b)
	endpoint, _ := inProcessDriver(b, logr.Discard())
	c := nodeClient(b, endpoint)
	dir := shortTempDir(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, n)
	var targets []*csi.NodePublishVolumeRequest
	defer func() {
		for _, req := range targets {
			_, _ = c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
		}
	}()
	b.ResetTimer()
	for i := 0; i < n; i++ {
		req := &csi.NodePublishVolumeRequest{VolumeId: fmt.Sprintf("pv-%d", i), TargetPath: filepath.Join(dir, fmt.Sprintf("t%d", i)),
			VolumeCapability: mountCapability(), VolumeContext: e.volumeContext(), Secrets: secretsOf(e.keys)}
		start := time.Now()
		if _, err := c.NodePublishVolume(ctx, req); err != nil {
			b.Fatalf("publish %d: %v", i, err)
		}
		lat = append(lat, time.Since(start))
		targets = append(targets, req)
	}
	b.StopTimer()
	p99 := func(ds []time.Duration) float64 {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[min(len(s)-1, len(s)*99/100)].Microseconds()) / 1000
	}
	b.ReportMetric(p99(lat), "p99-ms")
	b.ReportMetric(p99(lat[:50]), "first50-p99-ms")
	b.ReportMetric(p99(lat[n-50:]), "last50-p99-ms")
	// A republish of the last target with all 200 mounted: the path every
	// mount takes every kubelet sync.
	start := time.Now()
	if _, err := c.NodePublishVolume(ctx, targets[n-1]); err != nil {
		b.Fatalf("republish: %v", err)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "republish-ms")
}
