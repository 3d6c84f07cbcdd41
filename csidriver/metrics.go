package csidriver

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the driver's Prometheus metrics.
type Metrics struct {
	mounts         prometheus.Gauge
	swaps          *prometheus.CounterVec
	swapSeconds    prometheus.Histogram
	publishSeconds prometheus.Histogram
	serverDeaths   prometheus.Counter
	serverResumes  prometheus.Counter
	keyAge         *prometheus.GaugeVec
	servers        *prometheus.GaugeVec

	mu      sync.Mutex
	keysSet map[string]time.Time
}

// NewMetrics registers the metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		mounts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rekey_csi_mounts", Help: "FUSE mounts the supervisor runs on this node (set on scrape)."}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rekey_csi_swaps_total",
			Help: "Key swaps requested by republish, by result (applied, unchanged, refused, stale; error, sts_error when none was answered)."}, []string{"result"}),
		swapSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rekey_csi_swap_seconds",
			Help: "Latency of applied republish swaps.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rekey_csi_publish_seconds",
			Help: "Latency of NodePublishVolume calls that mounted.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
		serverDeaths: prometheus.NewCounter(prometheus.CounterOpts{Name: "rekey_csi_fuse_server_deaths_total",
			Help: "FUSE servers that died while mounted (their connection was aborted)."}),
		serverResumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "rekey_csi_fuse_server_resumes_total",
			Help: "FUSE servers that died and were replaced on their live connection."}),
		keyAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekey_csi_key_age_seconds",
			Help: "Seconds since the keys in use by a volume were set."}, []string{"volume"}),
		servers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekey_csi_fuse_servers",
			Help: "FUSE servers running on this node by rekey version (set on scrape; during an upgrade, docs/upgrade.md, both versions)."},
			[]string{"version"}),
		keysSet: map[string]time.Time{},
	}
	reg.MustRegister(m.mounts, m.swaps, m.swapSeconds, m.publishSeconds, m.serverDeaths, m.serverResumes, m.keyAge, m.servers)
	return m
}

func (m *Metrics) keySet(volume string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keysSet[volume] = time.Now()
}

// refreshKeyAge updates the key age gauges; the driver calls it on scrape ticks.
func (m *Metrics) refreshKeyAge() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for v, t := range m.keysSet {
		m.keyAge.WithLabelValues(v).Set(time.Since(t).Seconds())
	}
}

func (m *Metrics) keyForget(volume string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keysSet, volume)
	m.keyAge.DeleteLabelValues(volume)
}

// setServers sets the servers gauge from the versions of the running
// servers (one entry per server; "" is reported as "unknown").
func (m *Metrics) setServers(versions []string) {
	m.servers.Reset()
	for _, v := range versions {
		if v == "" {
			v = "unknown"
		}
		m.servers.WithLabelValues(v).Inc()
	}
}
