package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the sidecar's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg        *prometheus.Registry
	refreshes  *prometheus.CounterVec
	stsLatency *prometheus.HistogramVec
	expiry     *prometheus.GaugeVec
	swaps      *prometheus.CounterVec
	ready      prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rekey_sidecar_refreshes_total",
			Help: "Key refreshes by source (secret, rrsa, irsa) and result (success, unchanged, failure).",
		}, []string{"source", "result"}),
		stsLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rekey_sidecar_sts_request_duration_seconds",
			Help:    "Duration of STS calls by action and result (success, error).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"action", "result"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rekey_sidecar_key_expiration_timestamp_seconds",
			Help: "When the newest temporary keys of a volume expire (Unix time); absent for permanent keys.",
		}, []string{"volume_id"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rekey_sidecar_swaps_total",
			Help: "Swap calls to FUSE servers by result (applied, unchanged, refused, stale, error).",
		}, []string{"result"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rekey_sidecar_ready",
			Help: "1 when every volume's FUSE servers run the newest keys.",
		}),
	}
	m.reg.MustRegister(m.refreshes, m.stsLatency, m.expiry, m.swaps, m.ready,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) setExpiry(volumeID string, exp time.Time) {
	if exp.IsZero() {
		m.expiry.DeleteLabelValues(volumeID)
		return
	}
	m.expiry.WithLabelValues(volumeID).Set(float64(exp.Unix()))
}

func (m *metrics) observeSTS(action string, d time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.stsLatency.WithLabelValues(action, result).Observe(d.Seconds())
}

// handler serves /readyz and /healthz, and /metrics if withMetrics.
func (h *hub) handler(withHealth, withMetrics bool) http.Handler {
	mux := http.NewServeMux()
	if withHealth {
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("ok\n"))
		})
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			missing := h.readiness()
			h.metrics.ready.Set(boolFloat(missing == nil))
			if missing != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(strings.Join(missing, "\n") + "\n"))
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
	}
	if withMetrics {
		mux.Handle("/metrics", promhttp.HandlerFor(h.metrics.reg, promhttp.HandlerOpts{}))
	}
	return mux
}

// listen opens "host:port" or "unix:/path". A unix socket replaces a stale
// one and is removed when the listener closes.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sidecar: listen %s: %w", addr, err)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("sidecar: listen %s: %w", addr, err)
		}
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sidecar: listen %s: %w", addr, err)
	}
	return l, nil
}

// serveHTTP serves handler on lis until ctx ends.
func serveHTTP(ctx context.Context, lis net.Listener, handler http.Handler) error {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("sidecar: serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}
