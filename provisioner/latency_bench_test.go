package provisioner

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"rekey.dev/rekey/internal/fusetest"
)

// BenchmarkProvision50 creates 50 claims at once (prefix mode, in-process
// S3, envtest kube-apiserver) and reports the latency from each claim's
// creation to its PV's creation (claimRef set: kube-controller-manager
// binds from there; envtest runs none), p50 and p99 (the slowest of 50),
// read from a watch of PVs.
func BenchmarkProvision50(b *testing.B) {
	c := startCluster(b)
	c.secret(b, "team", "s3-keys", c.s3.Admin)
	c.class(b, "bench", corev1.PersistentVolumeReclaimDelete, map[string]string{"url": c.s3.URL, "otherOpts": "-o use_path_request_style",
		"bucket": fusetest.Bucket, "csi.storage.k8s.io/provisioner-secret-name": "s3-keys", "csi.storage.k8s.io/provisioner-secret-namespace": "team",
		"csi.storage.k8s.io/node-publish-secret-name": "s3-keys", "csi.storage.k8s.io/node-publish-secret-namespace": "team"})
	ctx := context.Background()
	var all []time.Duration
	for i := 0; b.Loop(); i++ {
		w, err := c.admin.CoreV1().PersistentVolumes().Watch(ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		created := map[string]time.Time{} // PV name -> claim created
		for j := range 50 {
			start := time.Now()
			pvc := c.claim(b, "team", fmt.Sprintf("c%d-%d", i, j), "bench", nil)
			mu.Lock()
			created["pvc-"+string(pvc.UID)] = start
			mu.Unlock()
		}
		got := 0
		deadline := time.After(2 * time.Minute)
		for got < 50 {
			select {
			case ev := <-w.ResultChan():
				pv, ok := ev.Object.(*corev1.PersistentVolume)
				if ev.Type != watch.Added || !ok {
					continue
				}
				mu.Lock()
				if t0, ok := created[pv.Name]; ok {
					all = append(all, time.Since(t0))
					got++
				}
				mu.Unlock()
			case <-deadline:
				b.Fatalf("%d of 50 PVs after 2 minutes", got)
			}
		}
		w.Stop()
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(all[len(all)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(len(all)), "claims")
}
