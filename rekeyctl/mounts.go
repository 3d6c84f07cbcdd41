package rekeyctl

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rekeyv1alpha1 "rekey.dev/rekey/api/v1alpha1"
	"rekey.dev/rekey/internal/clusterkey"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// States of a mount's keys against its Secret's current content.
const (
	StateCurrent  = "current"   // the Secret's current keys
	StateStale    = "stale"     // other keys
	StateUnknown  = "unknown"   // the plugin has not reported a fingerprint, or the Secret cannot be read
	StateNoStatus = "no-status" // the pod mounts the volume but no status was written yet
	StateNoSecret = "-"         // rrsa/irsa: no Secret to compare with
)

// Mount is one pod volume of the rekey driver.
type Mount struct {
	Namespace, Pod, Volume, Node string
	// Secret is the nodePublishSecretRef "namespace/name"; empty for none.
	Secret string
	// AuthType and Role come from the status (or the volume attributes).
	AuthType, Role string
	// Fingerprint is the keyed fingerprint of the keys in use; SecretNow
	// that of the Secret's current content ("" when not known).
	Fingerprint, SecretNow string
	// SecretErr says why the Secret's fingerprint is not known.
	SecretErr string
	AppliedAt time.Time
	LastError string
	HasStatus bool
}

// State classifies the mount.
func (m Mount) State() string {
	switch {
	case !m.HasStatus:
		return StateNoStatus
	case m.Secret == "":
		return StateNoSecret
	case m.Fingerprint == "" || m.SecretNow == "":
		return StateUnknown
	case m.Fingerprint == m.SecretNow:
		return StateCurrent
	default:
		return StateStale
	}
}

// Scope selects the mounts to show.
type Scope struct {
	// Namespace of the pods; "" for all.
	Namespace string
	// Secret "namespace/name": only mounts of this Secret.
	Secret string
	// Pod name: only this pod's mounts.
	Pod string
}

// Lister reads mounts from the API server.
type Lister struct {
	C client.Client
	// RekeyNamespace holds the fingerprint key Secret.
	RekeyNamespace string
}

// Mounts lists the mounts in scope: every running pod's rekey volume,
// joined with its RekeyVolumeStatus, and the fingerprint of its Secret's
// current content.
func (l *Lister) Mounts(ctx context.Context, sc Scope) ([]Mount, error) {
	var opts []client.ListOption
	if sc.Namespace != "" {
		opts = append(opts, client.InNamespace(sc.Namespace))
	}
	var statuses rekeyv1alpha1.RekeyVolumeStatusList
	if err := l.C.List(ctx, &statuses, opts...); err != nil {
		return nil, explain(err, "list RekeyVolumeStatus", sc.Namespace)
	}
	var pods corev1.PodList
	if err := l.C.List(ctx, &pods, opts...); err != nil {
		return nil, explain(err, "list pods", sc.Namespace)
	}
	byPod := map[types.UID][]rekeyv1alpha1.RekeyVolumeStatus{}
	for _, s := range statuses.Items {
		byPod[s.Status.PodUID] = append(byPod[s.Status.PodUID], s)
	}
	pvs := map[string]*corev1.PersistentVolume{}
	var out []Mount
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
			continue
		}
		if sc.Pod != "" && p.Name != sc.Pod {
			continue
		}
		vols, err := l.volumes(ctx, p, pvs)
		if err != nil {
			return nil, err
		}
		for _, v := range vols {
			if sc.Secret != "" && v.secret != sc.Secret {
				continue
			}
			m := Mount{Namespace: p.Namespace, Pod: p.Name, Volume: v.name, Node: p.Spec.NodeName, Secret: v.secret,
				AuthType: v.authType, Role: v.role}
			for _, s := range byPod[p.UID] {
				if s.Status.VolumeID == v.handle {
					fill(&m, s.Status)
				}
			}
			out = append(out, m)
		}
	}
	if err := l.secretFingerprints(ctx, out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Pod != b.Pod {
			return a.Pod < b.Pod
		}
		return a.Volume < b.Volume
	})
	return out, nil
}

func fill(m *Mount, s rekeyv1alpha1.VolumeKeyStatus) {
	m.HasStatus = true
	m.Fingerprint = s.Fingerprint
	if s.KeySource.AuthType != "" {
		m.AuthType = s.KeySource.AuthType
	}
	if s.KeySource.RoleARN != "" {
		m.Role = s.KeySource.RoleARN
	}
	if s.AppliedAt != nil {
		m.AppliedAt = s.AppliedAt.Time
	}
	if s.LastRefusal != nil && (s.AppliedAt == nil || !s.LastRefusal.Time.Before(s.AppliedAt)) {
		m.LastError = s.LastRefusal.Reason
	}
}

// volume is one rekey volume of a pod.
type volume struct {
	name, handle, secret, authType, role string
}

// volumes finds the pod's rekey volumes: inline CSI volumes of the driver
// and claims bound to PersistentVolumes of the driver.
func (l *Lister) volumes(ctx context.Context, p *corev1.Pod, pvs map[string]*corev1.PersistentVolume) ([]volume, error) {
	var out []volume
	for _, v := range p.Spec.Volumes {
		switch {
		case v.CSI != nil && v.CSI.Driver == contract.DriverName:
			vol := volume{name: v.Name, handle: contract.EphemeralVolumeID(string(p.UID), v.Name),
				authType: v.CSI.VolumeAttributes[contract.VolumeAttrAuthType], role: v.CSI.VolumeAttributes[contract.VolumeAttrRoleARN]}
			if v.CSI.NodePublishSecretRef != nil {
				vol.secret = p.Namespace + "/" + v.CSI.NodePublishSecretRef.Name
			}
			out = append(out, vol)
		case v.PersistentVolumeClaim != nil:
			var pvc corev1.PersistentVolumeClaim
			if err := l.C.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: v.PersistentVolumeClaim.ClaimName}, &pvc); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, explain(err, "get PersistentVolumeClaim "+p.Namespace+"/"+v.PersistentVolumeClaim.ClaimName, p.Namespace)
			}
			if pvc.Spec.VolumeName == "" {
				continue
			}
			pv, ok := pvs[pvc.Spec.VolumeName]
			if !ok {
				pv = &corev1.PersistentVolume{}
				if err := l.C.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
					if !apierrors.IsNotFound(err) {
						return nil, explain(err, "get PersistentVolume "+pvc.Spec.VolumeName, "")
					}
					pv = nil
				}
				pvs[pvc.Spec.VolumeName] = pv
			}
			if pv == nil || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != contract.DriverName {
				continue
			}
			vol := volume{name: pv.Name, handle: pv.Spec.CSI.VolumeHandle,
				authType: pv.Spec.CSI.VolumeAttributes[contract.VolumeAttrAuthType], role: pv.Spec.CSI.VolumeAttributes[contract.VolumeAttrRoleARN]}
			if r := pv.Spec.CSI.NodePublishSecretRef; r != nil {
				vol.secret = r.Namespace + "/" + r.Name
			}
			out = append(out, vol)
		}
	}
	return out, nil
}

// secretFingerprints fills SecretNow of every mount with a Secret.
func (l *Lister) secretFingerprints(ctx context.Context, ms []Mount) error {
	var key []byte
	var keyErr error
	done := map[string][2]string{}
	for i := range ms {
		m := &ms[i]
		if m.Secret == "" {
			continue
		}
		if r, ok := done[m.Secret]; ok {
			m.SecretNow, m.SecretErr = r[0], r[1]
			continue
		}
		if key == nil && keyErr == nil {
			key, keyErr = l.clusterKey(ctx)
		}
		fp, err := "", keyErr
		if err == nil {
			fp, err = l.SecretFingerprint(ctx, m.Secret, key)
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		done[m.Secret] = [2]string{fp, msg}
		m.SecretNow, m.SecretErr = fp, msg
	}
	return nil
}

func (l *Lister) clusterKey(ctx context.Context) ([]byte, error) {
	var s corev1.Secret
	if err := l.C.Get(ctx, client.ObjectKey{Namespace: l.RekeyNamespace, Name: contract.FingerprintKeySecret}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("the fingerprint key Secret %s/%s does not exist: is rekey's node plugin running (it creates it), and is rekey installed in %s (--rekey-namespace)?",
				l.RekeyNamespace, contract.FingerprintKeySecret, l.RekeyNamespace)
		}
		return nil, explain(err, "read the fingerprint key Secret "+l.RekeyNamespace+"/"+contract.FingerprintKeySecret+
			" (needed to compare keys with a Secret's content)", l.RekeyNamespace)
	}
	k := s.Data[contract.FingerprintKeyEntry]
	if len(k) < keys.MinClusterKeyLen {
		return nil, clusterkey.ErrInvalid
	}
	return k, nil
}

// ErrSecretNotFound is returned for a --secret that does not exist.
var ErrSecretNotFound = errors.New("rekeyctl: no such Secret")

// SecretFingerprint is the keyed fingerprint of the keys in Secret ref ("namespace/name").
func (l *Lister) SecretFingerprint(ctx context.Context, ref string, key []byte) (string, error) {
	ns, name, err := SplitRef(ref)
	if err != nil {
		return "", err
	}
	var s corev1.Secret
	if err := l.C.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("%w: %s (check --secret; it is the volume's nodePublishSecretRef)", ErrSecretNotFound, ref)
		}
		return "", explain(err, "read Secret "+ref, ns)
	}
	k, err := keys.FromSecret(stringData(s.Data))
	if err != nil {
		return "", fmt.Errorf("the Secret %s: %w", ref, err)
	}
	return k.KeyedFingerprint(key)
}
