package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// hub holds the newest keys of every configured volume and delivers them
// to the FUSE servers found in the socket directory: one worker goroutine
// per socket, woken when its volume's keys change, when its socket is
// replaced, and every poll interval (which notices restarted servers).
type hub struct {
	cfg     *Config
	log     logr.Logger
	metrics *metrics

	mu      sync.Mutex
	vols    map[string]*volume // by volume ID
	servers map[string]*server // by socket path
	ctx     context.Context    // workers' parent; set by run
	wg      sync.WaitGroup
}

// volume is one configured source and its newest keys. Fields are guarded
// by hub.mu.
type volume struct {
	id, name, source string
	keys             keys.Keys
	gen              uint64 // 0 until the source produced keys
	report           string // the latest failure to report
	reportSeq        uint64 // increases with every failure
}

// server is one control socket and what its worker learned. Fields after
// the first block are written by the worker under hub.mu.
type server struct {
	path   string
	ino    uint64
	kick   chan struct{}
	cancel context.CancelFunc

	volID      string
	syncedGen  uint64 // generation of ours the server is known to run (or to have superseded)
	settledGen uint64 // generation of ours this server process answered for good
	reported   uint64 // reportSeq delivered
	pid        int32
	started    time.Time
	warned     bool
	untrusted  string // why the socket's server is not trusted; "" if it is (or unknown)
}

func newHub(cfg *Config, m *metrics) *hub {
	return &hub{cfg: cfg, log: cfg.Log, metrics: m, vols: map[string]*volume{}, servers: map[string]*server{}}
}

func (h *hub) addVolume(id string, src contract.Source) {
	h.vols[id] = &volume{id: id, name: src.VolumeName, source: authType(src)}
}

// publish makes k the newest keys of volume id; observed is when the source
// learned them (when kubelet wrote the projected Secret, or when STS issued
// the keys). Their generation is that instant on the node's clock, which
// the FUSE server and the node plugin share (see rotation.MaxGenerationAhead),
// raised if needed to stay above the volume's previous one. Identical keys
// change nothing.
func (h *hub) publish(id string, k keys.Keys, observed time.Time) {
	h.mu.Lock()
	v := h.vols[id]
	if v.gen != 0 && v.keys.Equal(k) {
		h.mu.Unlock()
		h.metrics.refreshes.WithLabelValues(v.source, "unchanged").Inc()
		return
	}
	v.keys = k
	v.gen = max(uint64(max(observed.UnixNano(), 0)), v.gen+1)
	gen := v.gen
	// Counted before the kick: whoever sees the push sees the count.
	h.metrics.refreshes.WithLabelValues(v.source, "success").Inc()
	h.kickVolumeLocked(id)
	h.mu.Unlock()
	h.metrics.setExpiry(id, k.Expiration)
	kv := []any{"volumeId", id, "source", v.source, "fingerprint", k.Fingerprint(), "generation", gen}
	if !k.Expiration.IsZero() {
		kv = append(kv, "expiration", k.Expiration.UTC().Format(time.RFC3339))
	}
	h.log.Info("new keys", kv...)
}

// fail records a failure of volume id's source for Report.
func (h *hub) fail(id, reason string) {
	h.mu.Lock()
	v := h.vols[id]
	v.report = reason
	v.reportSeq++
	// Counted before the kick: whoever sees the report sees the count.
	h.metrics.refreshes.WithLabelValues(v.source, "failure").Inc()
	h.kickVolumeLocked(id)
	h.mu.Unlock()
	h.log.Error(nil, "cannot refresh keys; the keys in use stay", "volumeId", id, "source", v.source, "reason", reason)
}

func (h *hub) kickVolumeLocked(id string) {
	for _, s := range h.servers {
		if s.volID == id || s.volID == "" {
			kick(s.kick)
		}
	}
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// discover reconciles the workers with the sockets in the socket
// directory: new sockets get a worker, vanished ones lose it, and a socket
// whose inode changed (its server restarted and bound it anew) gets a fresh
// connection.
func (h *hub) discover() {
	found := map[string]uint64{}
	ents, err := os.ReadDir(h.cfg.SocketDir)
	if err != nil && !os.IsNotExist(err) {
		h.log.Error(err, "cannot list the socket directory", "dir", h.cfg.SocketDir)
		return
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), contract.SocketSuffix) || e.Type()&fs.ModeSocket == 0 {
			continue
		}
		p := filepath.Join(h.cfg.SocketDir, e.Name())
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			continue
		}
		found[p] = st.Ino
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx == nil || h.ctx.Err() != nil {
		return
	}
	for p, s := range h.servers {
		if ino, ok := found[p]; !ok || ino != s.ino {
			s.cancel()
			delete(h.servers, p)
		}
	}
	for p, ino := range found {
		if _, ok := h.servers[p]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(h.ctx)
		s := &server{path: p, ino: ino, kick: make(chan struct{}, 1), cancel: cancel}
		h.servers[p] = s
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.work(ctx, s)
		}()
	}
}

// work serves one socket until ctx ends.
func (h *hub) work(ctx context.Context, s *server) {
	log := h.log.WithValues("socket", s.path)
	// Keys go only to a server the node plugin started: whoever serves the
	// socket must run as one of ServerUIDs (SO_PEERCRED). Checked here once
	// for a clear report, and by the client on every connection.
	check := Backoff{Min: h.cfg.MinBackoff, Max: h.cfg.MaxBackoff}
	for {
		cctx, cancel := context.WithTimeout(ctx, h.cfg.RPCTimeout)
		p, err := control.CheckServer(cctx, s.path, h.cfg.ServerUIDs)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, control.ErrUntrustedServer) {
			log.Error(err, "not sending keys: the socket is not served by a FUSE server of the node plugin",
				"serverUid", p.UID, "serverPid", p.PID, "trustedUids", h.cfg.ServerUIDs)
			h.mu.Lock()
			s.untrusted = fmt.Sprintf("socket %s is served by UID %d, not by the node plugin", filepath.Base(s.path), p.UID)
			h.mu.Unlock()
			h.metrics.ready.Set(boolFloat(h.readiness() == nil))
			return // a replaced socket (new inode) gets a new worker
		}
		// Not answering yet (a server starting, or a stale socket until
		// kubelet or the server replaces it): try again with backoff.
		if !waitKick(ctx, s.kick, check.Next()) {
			return
		}
	}
	c, err := dialServer(s.path, h.cfg.ServerUIDs)
	if err != nil {
		log.Error(err, "cannot set up a client for the control socket")
		return
	}
	defer func() { _ = c.Close() }()
	log.Info("FUSE server socket found")
	bo := Backoff{Min: h.cfg.MinBackoff, Max: h.cfg.MaxBackoff}
	for {
		wait := h.cfg.PollInterval
		if h.sync(ctx, s, c, log) {
			bo.Reset()
		} else {
			wait = bo.Next()
		}
		if !waitKick(ctx, s.kick, wait) {
			return
		}
	}
}

// waitKick waits for d, a kick or the end of ctx; false means ctx ended.
func waitKick(ctx context.Context, kick <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-kick:
	case <-t.C:
	}
	return true
}

// sync brings one server up to date: it asks for Status, delivers a
// pending failure report and pushes the newest keys if decidePush says so.
// It returns false if it should be retried with backoff.
func (h *hub) sync(ctx context.Context, s *server, c *control.Client, log logr.Logger) bool {
	rctx, cancel := context.WithTimeout(ctx, h.cfg.RPCTimeout)
	defer cancel()
	st, err := c.Status(rctx)
	if err != nil {
		if ctx.Err() == nil {
			log.V(1).Info("control socket does not answer; retrying", "err", err.Error())
		}
		return false
	}
	h.mu.Lock()
	if s.pid != 0 && (s.pid != st.PID || !s.started.Equal(st.StartedAt)) {
		log.Info("FUSE server restarted; checking its keys", "volumeId", st.VolumeID, "pid", st.PID)
		s.syncedGen, s.settledGen = 0, 0
	}
	s.pid, s.started = st.PID, st.StartedAt
	s.volID = st.VolumeID
	v, ok := h.vols[s.volID]
	var (
		k                     keys.Keys
		gen, reportSeq        uint64
		report, source        string
		warn                  = !s.warned
		settledGen, delivered = s.settledGen, s.reported
	)
	if ok {
		k, gen, report, reportSeq, source = v.keys, v.gen, v.report, v.reportSeq, v.source
	}
	s.warned = true
	h.mu.Unlock()

	if !ok {
		if warn {
			log.Info("no key source is configured for this FUSE server's volume; leaving it alone", "volumeId", s.volID)
		}
		return true
	}
	if warn && st.AuthType != "" && st.AuthType != source {
		log.Info("FUSE server expects another key source than configured; pushing the configured one",
			"volumeId", s.volID, "expected", st.AuthType, "configured", source)
	}

	if reportSeq > delivered {
		err := c.Report(rctx, s.volID, source, report)
		if err != nil && control.Retryable(err) {
			log.V(1).Info("report not delivered; retrying", "err", err.Error())
			return false
		}
		if err != nil {
			log.Error(err, "FUSE server did not accept the failure report", "volumeId", s.volID)
		}
		h.mu.Lock()
		s.reported = reportSeq
		h.mu.Unlock()
	}
	fp := k.Fingerprint()
	switch decidePush(pushView{gen: gen, fp: fp, serverFP: st.Fingerprint, settledGen: settledGen}) {
	case pushNothing:
		return true
	case pushSynced:
		h.markSynced(s, gen)
		return true
	}

	start := time.Now()
	out, err := c.Swap(rctx, rotation.Request{Keys: k, Source: source, Generation: gen})
	label := "error"
	if err == nil {
		label = out.Result.String()
	}
	h.metrics.swaps.WithLabelValues(label).Inc()
	if err == nil && h.cfg.OnSwap != nil {
		ev := SwapEvent{Socket: s.path, VolumeID: s.volID, Generation: gen, Fingerprint: fp, Result: label, Message: out.Message}
		if out.Result == rotation.ResultRefused {
			ev.Reason = out.Reason.String()
		}
		h.cfg.OnSwap(ev)
	}
	settle := func() {
		h.mu.Lock()
		s.settledGen = gen
		h.mu.Unlock()
	}
	switch judgeSwap(out, err) {
	case swapSynced:
		h.markSynced(s, gen)
		log.Info("keys in use", "volumeId", s.volID, "result", label, "fingerprint", out.Fingerprint,
			"generation", out.Generation, "took", time.Since(start).Round(time.Millisecond))
		return true
	case swapNewer:
		// The server runs keys another sender observed after ours (the
		// node plugin's republish reads the Secret from the API server,
		// the projected file can lag), or ours are keys it replaced.
		log.Info("FUSE server keeps newer keys; not pushing these again", "volumeId", s.volID,
			"fingerprint", fp, "generation", gen, "serverFingerprint", out.Fingerprint,
			"serverGeneration", out.Generation, "message", out.Message)
		settle()
		h.markSynced(s, gen)
		return true
	case swapRefused:
		if err != nil {
			log.Error(err, "FUSE server rejected the swap request", "volumeId", s.volID, "generation", gen, "code", control.Code(err))
		} else {
			log.Error(nil, "FUSE server refused the new keys; the old keys stay in use", "volumeId", s.volID,
				"fingerprint", fp, "generation", gen, "reason", out.Reason.String(), "message", out.Message)
		}
		settle()
		return true
	case swapRetry:
		if err != nil {
			log.V(1).Info("swap not delivered; retrying", "volumeId", s.volID, "generation", gen, "err", err.Error())
		} else {
			log.Error(nil, "FUSE server could not check the new keys; retrying", "volumeId", s.volID,
				"fingerprint", fp, "generation", gen, "reason", out.Reason.String(), "message", out.Message)
		}
		return false
	}
	log.Error(nil, "unexpected swap result", "volumeId", s.volID, "result", label)
	return false
}

func (h *hub) markSynced(s *server, gen uint64) {
	h.mu.Lock()
	s.syncedGen = gen
	h.mu.Unlock()
	h.metrics.ready.Set(boolFloat(h.readiness() == nil))
}

// readiness returns nil if every configured volume has keys and every
// FUSE server of it runs them, or the list of what is missing.
func (h *hub) readiness() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var missing []string
	for _, s := range h.servers {
		if s.untrusted != "" {
			missing = append(missing, s.untrusted)
		}
	}
	for id, v := range h.vols {
		if v.gen == 0 {
			missing = append(missing, id+": no keys yet")
			continue
		}
		n := 0
		for _, s := range h.servers {
			if s.volID != id {
				continue
			}
			n++
			if s.syncedGen != v.gen {
				missing = append(missing, id+": FUSE server "+filepath.Base(s.path)+" does not run the newest keys")
			}
		}
		if n == 0 {
			missing = append(missing, id+": no FUSE server socket found")
		}
	}
	slices.Sort(missing)
	return missing
}

// stop ends every worker and waits for them.
func (h *hub) stop() {
	h.mu.Lock()
	for p, s := range h.servers {
		s.cancel()
		delete(h.servers, p)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
