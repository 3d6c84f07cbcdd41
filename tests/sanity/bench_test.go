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
