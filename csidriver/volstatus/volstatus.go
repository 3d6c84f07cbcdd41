// Package volstatus writes the node plugin's RekeyVolumeStatus objects:
// one per pod volume, owned by the pod (so the garbage collector deletes
// it with the pod), recording the keys in use, when they were applied, the
// last refusal and the FUSE server's resumes.
//
// Writes are batched and rate-limited: callers record changes in memory
// (never blocking on the API server); a loop writes each changed mount's
// newest state once per batching window, through a token bucket shared by
// the whole node. A node whose 200 mounts rotate at once sends at most one
// write per mount per window, paced at the bucket's rate. Each write is a
// server-side apply of the whole status, so concurrent writers (a restarted
// plugin, a user's kubectl edit) cannot make it fail with a conflict.
package volstatus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rekeyv1alpha1 "rekey.dev/rekey/api/v1alpha1"
)

// FieldManager is the server-side apply manager of the node plugin's writes.
const FieldManager = "rekey-csi"

// Defaults of Config.
const (
	DefaultWindow = time.Second
	DefaultQPS    = 5
	DefaultBurst  = 10
	retryAfter    = 5 * time.Second
)

// Config configures a Writer.
type Config struct {
	// Client writes the objects; its scheme must know rekeyv1alpha1.
	Client client.Client
	// Node is the node's name, recorded in each status.
	Node string
	// Version is the node plugin's version, recorded in each status.
	Version string
	// Window is how long changes gather before they are written (DefaultWindow).
	Window time.Duration
	// QPS and Burst bound the node's status writes (DefaultQPS, DefaultBurst).
	QPS   float32
	Burst int
	// Writes counts writes by result ("ok", "error"); nil: not counted.
	Writes *prometheus.CounterVec
	Log    logr.Logger
}

// Mount identifies one pod volume.
type Mount struct {
	// MountID is the supervisor's mount ID (a hash of the target path).
	MountID                       string
	PodName, PodNamespace, PodUID string
	VolumeID                      string
	AuthType, RoleARN             string
}

// Writer batches and writes RekeyVolumeStatus objects. Its recording
// methods never block on the API server; Run writes.
type Writer struct {
	cfg     Config
	limiter flowcontrol.RateLimiter

	mu     sync.Mutex
	mounts map[string]*entry // by MountID
	dirty  map[string]bool
	kick   chan struct{}

	noCRDLogged atomic.Bool
}

type entry struct {
	mount  Mount
	status rekeyv1alpha1.VolumeKeyStatus
	seeded bool // merged with the object found on the API server
}

// New returns a Writer; call Run to start writing.
func New(cfg Config) *Writer {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.QPS <= 0 {
		cfg.QPS = DefaultQPS
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	return &Writer{cfg: cfg, limiter: flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst),
		mounts: map[string]*entry{}, dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Name is the object name of a mount's status: the pod's name and 8 hex
// digits of the mount ID (a pod may mount several rekey volumes).
func Name(m Mount) string {
	sum := sha256.Sum256([]byte(m.MountID))
	suffix := "-" + hex.EncodeToString(sum[:4])
	pod := m.PodName
	if max := validation.DNS1123SubdomainMaxLength - len(suffix); len(pod) > max {
		pod = strings.TrimRight(pod[:max], "-.")
	}
	return pod + suffix
}

// update applies change to mount m's state and schedules a write. Mounts
// without a pod (no podInfoOnMount) have no owner and get no status.
func (w *Writer) update(m Mount, change func(*rekeyv1alpha1.VolumeKeyStatus)) {
	if w == nil || m.PodName == "" || m.PodNamespace == "" || m.PodUID == "" || m.MountID == "" {
		return
	}
	w.mu.Lock()
	e, ok := w.mounts[m.MountID]
	if !ok {
		e = &entry{}
		w.mounts[m.MountID] = e
	}
	e.mount = m
	change(&e.status)
	w.dirty[m.MountID] = true
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Applied records that the mount runs keys with the (keyed) fingerprint
// fp since at, delivered by by; expiration is zero for permanent keys.
func (w *Writer) Applied(m Mount, fp string, expiration time.Time, by string, at time.Time) {
	w.update(m, func(s *rekeyv1alpha1.VolumeKeyStatus) {
		s.Fingerprint = fp
		s.Expiration = optTime(expiration)
		s.AppliedAt = optTime(at)
		s.AppliedBy = by
	})
}

// Refused records a failure to apply keys (the keys in use stayed).
func (w *Writer) Refused(m Mount, reason, source string, at time.Time) {
	w.update(m, func(s *rekeyv1alpha1.VolumeKeyStatus) {
		s.LastRefusal = &rekeyv1alpha1.Refusal{Time: metav1.NewTime(at), Reason: reason, Source: source}
	})
}

// Resumed records that the mount's FUSE server was replaced on its connection.
func (w *Writer) Resumed(m Mount) {
	w.update(m, func(s *rekeyv1alpha1.VolumeKeyStatus) { s.Resumes++ })
}

// Forget drops the mount's state (unpublished); its object goes with its pod.
func (w *Writer) Forget(mountID string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.mounts, mountID)
	delete(w.dirty, mountID)
}

func optTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t)
	return &mt
}

// Run writes changed mounts until ctx ends: after each change it waits one
// window for more, then writes each changed mount once.
func (w *Writer) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.Window):
		}
		w.Flush(ctx)
	}
}

// Flush writes every changed mount now (rate-limited). Failed writes stay
// pending and are retried after a few seconds.
func (w *Writer) Flush(ctx context.Context) {
	w.mu.Lock()
	type job struct {
		id string
		e  entry
	}
	jobs := make([]job, 0, len(w.dirty))
	for id := range w.dirty {
		jobs = append(jobs, job{id, *w.mounts[id]})
		w.mounts[id].status = *w.mounts[id].status.DeepCopy()
	}
	clear(w.dirty)
	w.mu.Unlock()
	failed := false
	for _, j := range jobs {
		if err := w.limiter.Wait(ctx); err != nil {
			w.redo(j.id)
			return
		}
		if err := w.write(ctx, j.id, &j.e); err != nil {
			w.count("error")
			if apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, "NamespaceTerminating") {
				w.Forget(j.id) // the pod's namespace goes, and the status with it
				continue
			}
			if meta.IsNoMatchError(err) {
				if !w.noCRDLogged.Swap(true) {
					w.cfg.Log.Error(err, "the RekeyVolumeStatus CRD is not installed (manifests/crd); statuses are kept in memory and written once it is")
				}
			} else {
				w.cfg.Log.Error(err, "writing the volume's status failed; retrying", "mountId", j.id,
					"pod", j.e.mount.PodNamespace+"/"+j.e.mount.PodName)
			}
			w.redo(j.id)
			failed = true
			continue
		}
		w.count("ok")
	}
	if failed {
		time.AfterFunc(retryAfter, func() {
			select {
			case w.kick <- struct{}{}:
			default:
			}
		})
	}
}

func (w *Writer) count(result string) {
	if w.cfg.Writes != nil {
		w.cfg.Writes.WithLabelValues(result).Inc()
	}
}

// redo marks a mount changed again, unless it was forgotten meanwhile.
func (w *Writer) redo(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.mounts[id]; ok {
		w.dirty[id] = true
	}
}

// write applies the status of one mount. The first write of a mount after
// the plugin started merges what the object already records (the previous
// plugin's refusal, resumes, keys), since an apply drops the fields this
// manager no longer sets.
func (w *Writer) write(ctx context.Context, id string, e *entry) error {
	m := e.mount
	name := Name(m)
	if !e.seeded {
		var old rekeyv1alpha1.RekeyVolumeStatus
		err := w.cfg.Client.Get(ctx, client.ObjectKey{Namespace: m.PodNamespace, Name: name}, &old)
		switch {
		case err == nil && string(old.Status.PodUID) == m.PodUID:
			e.status = merge(old.Status, e.status)
			w.mu.Lock()
			if cur, ok := w.mounts[id]; ok {
				cur.status = merge(old.Status, cur.status)
				cur.seeded = true
			}
			w.mu.Unlock()
		case err == nil || apierrors.IsNotFound(err):
			w.mu.Lock()
			if cur, ok := w.mounts[id]; ok {
				cur.seeded = true
			}
			w.mu.Unlock()
		default:
			return fmt.Errorf("volstatus: read %s/%s: %w", m.PodNamespace, name, err)
		}
	}
	st := e.status
	st.PodName, st.PodUID, st.VolumeID, st.MountID, st.Node = m.PodName, types.UID(m.PodUID), m.VolumeID, m.MountID, w.cfg.Node
	st.KeySource = rekeyv1alpha1.KeySource{AuthType: m.AuthType, RoleARN: m.RoleARN}
	st.NodePluginVersion = w.cfg.Version
	now := metav1.Now()
	st.UpdatedAt = &now
	obj := &rekeyv1alpha1.RekeyVolumeStatus{
		TypeMeta: metav1.TypeMeta{APIVersion: rekeyv1alpha1.GroupVersion.String(), Kind: rekeyv1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: m.PodNamespace, Labels: labels(m.PodName, w.cfg.Node),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: m.PodName, UID: types.UID(m.PodUID)}}},
		Status: st,
	}
	//nolint:staticcheck // client.Apply with a typed object: no generated apply configurations for this CRD
	if err := w.cfg.Client.Patch(ctx, obj, client.Apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("volstatus: apply %s/%s: %w", m.PodNamespace, name, err)
	}
	return nil
}

// merge fills what cur does not know from old (a previous plugin's record).
func merge(old, cur rekeyv1alpha1.VolumeKeyStatus) rekeyv1alpha1.VolumeKeyStatus {
	out := *cur.DeepCopy()
	if out.Fingerprint == "" {
		out.Fingerprint, out.Expiration, out.AppliedAt, out.AppliedBy = old.Fingerprint, old.Expiration, old.AppliedAt, old.AppliedBy
	}
	if out.LastRefusal == nil {
		out.LastRefusal = old.LastRefusal
	}
	out.Resumes += old.Resumes
	return out
}

func labels(pod, node string) map[string]string {
	l := map[string]string{"app.kubernetes.io/managed-by": "rekey-csi"}
	for k, v := range map[string]string{rekeyv1alpha1.LabelPod: pod, rekeyv1alpha1.LabelNode: node} {
		if len(validation.IsValidLabelValue(v)) == 0 {
			l[k] = v
		}
	}
	return l
}
