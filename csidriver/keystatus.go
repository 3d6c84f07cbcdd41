package csidriver

import (
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/csidriver/volstatus"
	"rekey.dev/rekey/fuseserver/keycustody"
	"rekey.dev/rekey/internal/keys"
)

// publishSource is who applied the keys a mount started with.
const publishSource = "csi-publish"

// Key states of the rekey_csi_mounts_by_key_state gauge.
const (
	keyStateCurrent = "current" // the keys of the Secret content kubelet passed last
	keyStateStale   = "stale"   // other keys
	keyStateUnknown = "unknown" // no keys, or no Secret content seen yet
)

// keyStatus follows the keys each mount runs on: it fingerprints them with
// the cluster key (for Events and status objects), feeds the
// RekeyVolumeStatus writer, and keeps the gauge of mounts by key state per
// Secret. The keys in use are read from the mount's key custody file, which
// the FUSE server writes before it uses them; the Secret's current content
// is what kubelet passed for the mount on its last publish or republish.
// CSI does not name the Secret to a node plugin, so the gauge is by volume
// (a PersistentVolume names one Secret).
type keyStatus struct {
	clusterKey []byte            // nil: fingerprints name the access key ID only
	vault      *vault            // the mounts' custody files
	writer     *volstatus.Writer // nil: no status objects
	states     *prometheus.GaugeVec
	log        logr.Logger

	mu    sync.Mutex
	inUse map[string]mountKeys // by mount ID
}

type mountKeys struct {
	volume       string
	fp, secretFP string // keyed fingerprints of the keys in use and of the Secret content last passed
}

func newKeyStatus(clusterKey []byte, v *vault, w *volstatus.Writer, reg prometheus.Registerer, log logr.Logger) *keyStatus {
	ks := &keyStatus{clusterKey: clusterKey, vault: v, writer: w, log: log,
		states: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekey_csi_mounts_by_key_state",
			Help: "Mounts on this node by volume and whether their keys are those of the Secret content kubelet passed last (current, stale, unknown)."},
			[]string{"volume", "state"}),
		inUse: map[string]mountKeys{}}
	if reg != nil {
		reg.MustRegister(ks.states)
	}
	return ks
}

// fingerprint is the keyed fingerprint of k; without a cluster key, the
// access key ID alone.
func (ks *keyStatus) fingerprint(k keys.Keys) string {
	if ks == nil || ks.clusterKey == nil {
		return k.AccessKeyID
	}
	fp, err := k.KeyedFingerprint(ks.clusterKey)
	if err != nil {
		return k.AccessKeyID
	}
	return fp
}

// inCustody reads the keys a mount's FUSE server uses from its custody file.
func (ks *keyStatus) inCustody(mountID string) (keys.Keys, bool) {
	if ks == nil {
		return keys.Keys{}, false
	}
	fds, ok := ks.vault.get(mountID)
	if !ok || fds.Custody == nil {
		return keys.Keys{}, false
	}
	_, rec, ok, err := keycustody.Open(fds.Custody)
	if err != nil || !ok {
		return keys.Keys{}, false
	}
	return rec.Keys, true
}

// eventFingerprint answers the keyed fingerprint of the keys an "applied"
// event reports, and their expiry. The server's own fingerprint (unkeyed)
// never leaves the node: without custody, only its access key ID is used.
func (ks *keyStatus) eventFingerprint(ev supervisor.Event) (string, time.Time) {
	if k, ok := ks.inCustody(ev.MountID); ok {
		return ks.fingerprint(k), k.Expiration
	}
	id := ev.Fingerprint
	if i := strings.LastIndexByte(id, ':'); i >= 0 {
		id = id[:i]
	}
	return id, time.Time{}
}

func mountOf(id string, s supervisor.Spec) volstatus.Mount {
	return volstatus.Mount{MountID: id, PodName: s.PodName, PodNamespace: s.PodNamespace, PodUID: s.PodUID,
		VolumeID: s.VolumeID, AuthType: s.AuthType, RoleARN: s.RoleARN}
}

// mounted records the keys a new mount started with; for a Secret volume
// they are also the Secret's current content.
func (ks *keyStatus) mounted(info supervisor.Info, k keys.Keys) {
	if ks == nil {
		return
	}
	fp := ks.fingerprint(k)
	ks.writer.Applied(mountOf(info.ID, info.Spec), fp, k.Expiration, publishSource, time.Now())
	secretFP := ""
	if info.Spec.AuthType == "secret" || info.Spec.AuthType == "" {
		secretFP = fp
	}
	ks.set(info.ID, info.Spec.VolumeID, func(m *mountKeys) { m.fp, m.secretFP = fp, secretFP })
}

// applied records an "applied" event with its keyed fingerprint.
func (ks *keyStatus) applied(ev supervisor.Event, fp string, exp time.Time) {
	if ks == nil {
		return
	}
	at := ev.Time
	if at.IsZero() {
		at = time.Now()
	}
	ks.writer.Applied(mountOf(ev.MountID, ev.Spec), fp, exp, ev.Source, at)
	ks.set(ev.MountID, ev.Spec.VolumeID, func(m *mountKeys) { m.fp = fp })
}

// refused records a failure to apply keys to the mount of spec.
func (ks *keyStatus) refused(s supervisor.Spec, reason string) {
	if ks == nil {
		return
	}
	ks.writer.Refused(mountOf(supervisor.MountID(s.Target), s), reason, "", time.Now())
}

// resumed records a resume of the mount's FUSE server.
func (ks *keyStatus) resumed(ev supervisor.Event) {
	if ks == nil {
		return
	}
	ks.writer.Resumed(mountOf(ev.MountID, ev.Spec))
}

// secretSeen records the Secret content kubelet passed on a republish.
func (ks *keyStatus) secretSeen(s supervisor.Spec, k keys.Keys) {
	if ks == nil || k.IsZero() {
		return
	}
	fp := ks.fingerprint(k)
	ks.set(supervisor.MountID(s.Target), s.VolumeID, func(m *mountKeys) { m.secretFP = fp })
}

// forget drops an unpublished mount.
func (ks *keyStatus) forget(mountID string) {
	if ks == nil {
		return
	}
	ks.writer.Forget(mountID)
	ks.mu.Lock()
	delete(ks.inUse, mountID)
	ks.mu.Unlock()
	ks.refreshStates()
}

func (ks *keyStatus) set(mountID, volume string, change func(*mountKeys)) {
	ks.mu.Lock()
	m := ks.inUse[mountID]
	m.volume = volume
	change(&m)
	ks.inUse[mountID] = m
	ks.mu.Unlock()
	ks.refreshStates()
}

// keyState classifies a mount's keys against its Secret's content.
func keyState(inUse, secret string, keyed bool) string {
	switch {
	case !keyed || inUse == "" || secret == "":
		return keyStateUnknown
	case inUse == secret:
		return keyStateCurrent
	default:
		return keyStateStale
	}
}

// refreshStates recounts the gauge (a few hundred mounts at most).
func (ks *keyStatus) refreshStates() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	counts := map[[2]string]int{}
	volumes := map[string]bool{}
	for _, m := range ks.inUse {
		volumes[m.volume] = true
		counts[[2]string{m.volume, keyState(m.fp, m.secretFP, ks.clusterKey != nil)}]++
	}
	ks.states.Reset()
	for v := range volumes {
		for _, st := range []string{keyStateCurrent, keyStateStale, keyStateUnknown} {
			ks.states.WithLabelValues(v, st).Set(float64(counts[[2]string{v, st}]))
		}
	}
}
