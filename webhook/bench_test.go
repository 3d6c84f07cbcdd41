package webhook_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rekey.dev/rekey/internal/contract"
)

// BenchmarkAdmissionLatency creates pods through a real API server at 100
// per second and reports p50/p99 of the create call as the client sees it
// and of the webhook's own serving time (TLS excluded: from request read to
// response written). One iteration is one pod; run with -benchtime=1000x.
//
//   - no-webhook: kube-system, which no webhook entry selects (baseline);
//   - passthrough: an unlabelled namespace without the annotation, so the
//     annotation entry is called and answers no patch;
//   - inject: a labelled namespace with a PVC of our driver.
func BenchmarkAdmissionLatency(b *testing.B) {
	cl := startCluster(b, clusterOptions{})
	c := cl.client
	mustCreate(b, c,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "labeled", Labels: map[string]string{contract.InjectionLabel: contract.InjectionEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	mustCreate(b, c, s3Volume("data", "labeled", map[string]string{"bucket": "b", "url": "http://s3:9000"}, "labeled")...)
	const rate = 100
	for _, bc := range []struct {
		name, ns string
		vols     []corev1.Volume
	}{
		{"no-webhook", "kube-system", nil},
		{"passthrough", "plain", []corev1.Volume{claim("data")}},
		{"inject", "labeled", []corev1.Volume{claim("data")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// Warm up connections and caches outside the measurement.
			for range 20 {
				mustCreate(b, c, testPod(bc.ns, "warm-", nil, nil, bc.vols...))
			}
			cl.served.reset()
			created := &durations{}
			var (
				wg     sync.WaitGroup
				errsMu sync.Mutex
				errs   []error
			)
			tick := time.NewTicker(time.Second / rate)
			defer tick.Stop()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				<-tick.C
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := testPod(bc.ns, "bench-", nil, nil, bc.vols...)
					start := time.Now()
					err := c.Create(context.Background(), p)
					created.add(time.Since(start))
					if err == nil && bc.name == "inject" && !injected(p) {
						err = fmt.Errorf("pod %s not injected", p.Name)
					}
					if err != nil {
						errsMu.Lock()
						errs = append(errs, err)
						errsMu.Unlock()
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if len(errs) > 0 {
				b.Fatalf("%d creates failed, first: %v", len(errs), errs[0])
			}
			p50, p99, n := created.quantiles()
			b.ReportMetric(float64(p50.Microseconds())/1000, "create-p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "create-p99-ms")
			w50, w99, wn := cl.served.quantiles()
			b.ReportMetric(float64(w50.Microseconds())/1000, "webhook-p50-ms")
			b.ReportMetric(float64(w99.Microseconds())/1000, "webhook-p99-ms")
			b.ReportMetric(0, "ns/op")
			b.Logf("%-12s creates=%d create p50=%v p99=%v | webhook calls=%d p50=%v p99=%v",
				bc.name, n, p50, p99, wn, w50, w99)
		})
	}
}

// BenchmarkHandler measures the admission handler alone (decode, decide,
// build the sidecar, patch) on the namespace-label golden pod, with the
// cluster objects in a fake client standing in for the informer cache.
func BenchmarkHandler(b *testing.B) {
	for _, name := range []string{"namespace-label", "multi-volume", "namespace-not-labeled"} {
		b.Run(name, func(b *testing.B) {
			var c goldenCase
			for _, gc := range goldenCases(b) {
				if gc.name == name {
					c = gc
				}
			}
			h := newHandler(b, c.in.Config)
			ns := c.namespace(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if resp := admit(h, ns, c.in.Pod); !resp.Allowed {
					b.Fatal("denied")
				}
			}
		})
	}
}
