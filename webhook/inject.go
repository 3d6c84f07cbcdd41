package webhook

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"rekey.dev/rekey/internal/contract"
)

var errEmpty = errors.New("must not be empty")

// skippedNamespaces never get a sidecar, whatever their pods say.
var skippedNamespaces = map[string]bool{"kube-system": true, "kube-public": true}

// Injector decides whether a pod gets the rekey sidecar and adds it.
type Injector struct {
	cfg Config
	// cache serves Namespaces, PersistentVolumeClaims and PersistentVolumes
	// from the manager's informers.
	cache client.Reader
	// live is read only when the cache misses an object or holds an unbound
	// claim: the object may be younger than the informer's view. May be nil.
	live client.Reader
}

// NewInjector returns an Injector that reads cluster objects through cache and
// falls back to live (which may be nil) on a cache miss.
func NewInjector(cfg Config, cache, live client.Reader) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cache == nil {
		return nil, fmt.Errorf("webhook: cache reader: %w", errEmpty)
	}
	return &Injector{cfg: cfg, cache: cache, live: live}, nil
}

// rekeyVolume is one pod volume served by our driver and what the sidecar
// needs to know about it.
type rekeyVolume struct {
	name      string // pod volume name
	volumeID  string // PV volumeHandle; empty for inline volumes
	attrs     map[string]string
	secretRef *corev1.SecretReference // nodePublishSecretRef, namespace filled in
}

// Default injects the sidecar into pod when it opted in and uses a volume of
// our driver. It changes pod only in that case, and a pod it changed before
// (StatusAnnotation) is left alone. Warnings explain what it could not do; an
// error means the pod's volumes could not be read and pod is unchanged.
func (in *Injector) Default(ctx context.Context, pod *corev1.Pod) (admission.Warnings, error) {
	log := logf.FromContext(ctx)
	ns := pod.Namespace
	if ns == "" {
		if req, err := admission.RequestFromContext(ctx); err == nil {
			ns = req.Namespace
		}
	}
	if ns == "" || skippedNamespaces[ns] || pod.Labels[SelfLabelKey] == SelfLabelValue ||
		pod.Annotations[contract.StatusAnnotation] == contract.StatusInjected {
		return nil, nil
	}
	var warnings admission.Warnings
	opted, w, err := in.optedIn(ctx, ns, pod)
	warnings = append(warnings, w...)
	if err != nil || !opted {
		return warnings, err
	}
	vols, w, err := in.rekeyVolumes(ctx, ns, pod)
	warnings = append(warnings, w...)
	if err != nil {
		return warnings, err
	}
	if len(vols) == 0 {
		log.V(1).Info("Pod opted in but uses no rekey volume", "namespace", ns)
		return warnings, nil
	}
	sources, volumes, w := in.sources(ns, vols)
	warnings = append(warnings, w...)
	if len(sources) == 0 {
		return warnings, nil
	}
	if w := conflicts(pod, len(volumes)); w != "" {
		return append(warnings, w), nil
	}
	sidecar, w, err := in.sidecar(pod, sources, len(volumes))
	warnings = append(warnings, w...)
	if err != nil {
		return warnings, err
	}

	warnings = append(warnings, stripPrivateMounts(pod)...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name:         contract.SocketVolumeName,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	})
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes...)
	if in.cfg.NativeSidecar {
		always := corev1.ContainerRestartPolicyAlways
		sidecar.RestartPolicy = &always
		pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, sidecar)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[contract.StatusAnnotation] = contract.StatusInjected
	log.V(1).Info("Injected rekey sidecar", "namespace", ns, "volumes", len(sources), "native", in.cfg.NativeSidecar)
	return warnings, nil
}

// optedIn applies the opt-in rules: the pod annotation wins; without it the
// namespace label decides.
func (in *Injector) optedIn(ctx context.Context, ns string, pod *corev1.Pod) (bool, admission.Warnings, error) {
	var warnings admission.Warnings
	if v, ok := pod.Annotations[contract.InjectAnnotation]; ok {
		switch v {
		case "true":
			return true, nil, nil
		case "false":
			return false, nil, nil
		default:
			warnings = append(warnings, fmt.Sprintf("rekey: annotation %s=%q is neither \"true\" nor \"false\"; ignored",
				contract.InjectAnnotation, v))
		}
	}
	var namespace corev1.Namespace
	found, err := in.get(ctx, types.NamespacedName{Name: ns}, &namespace)
	if err != nil {
		return false, warnings, fmt.Errorf("webhook: read namespace %s: %w", ns, err)
	}
	return found && namespace.Labels[contract.InjectionLabel] == contract.InjectionEnabled, warnings, nil
}

// rekeyVolumes lists the pod's volumes of our driver, in pod order.
func (in *Injector) rekeyVolumes(ctx context.Context, ns string, pod *corev1.Pod) ([]rekeyVolume, admission.Warnings, error) {
	var (
		vols     []rekeyVolume
		warnings admission.Warnings
	)
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.CSI != nil:
			if v.CSI.Driver != contract.DriverName {
				continue
			}
			rv := rekeyVolume{name: v.Name, attrs: v.CSI.VolumeAttributes}
			if ref := v.CSI.NodePublishSecretRef; ref != nil {
				rv.secretRef = &corev1.SecretReference{Name: ref.Name, Namespace: ns}
			}
			vols = append(vols, rv)
		case v.PersistentVolumeClaim != nil:
			rv, w, err := in.claimVolume(ctx, ns, v)
			if err != nil {
				return nil, warnings, err
			}
			if w != "" {
				warnings = append(warnings, w)
			}
			if rv != nil {
				vols = append(vols, *rv)
			}
		}
	}
	return vols, warnings, nil
}

// claimVolume follows a PVC to its PV. It answers nil when the PV is not
// ours, and a warning when it cannot tell.
func (in *Injector) claimVolume(ctx context.Context, ns string, v *corev1.Volume) (*rekeyVolume, string, error) {
	claimName := v.PersistentVolumeClaim.ClaimName
	if claimName == "" {
		return nil, "", nil
	}
	var pvc corev1.PersistentVolumeClaim
	key := types.NamespacedName{Namespace: ns, Name: claimName}
	found, err := in.get(ctx, key, &pvc)
	if err != nil {
		return nil, "", fmt.Errorf("webhook: read PersistentVolumeClaim %s: %w", key, err)
	}
	if found && pvc.Spec.VolumeName == "" && in.live != nil {
		// The informer may lag behind the binder: ask the API server once.
		if err := in.live.Get(ctx, key, &pvc); err != nil && !apierrors.IsNotFound(err) {
			return nil, "", fmt.Errorf("webhook: read PersistentVolumeClaim %s: %w", key, err)
		}
	}
	switch {
	case !found:
		return nil, fmt.Sprintf("rekey: volume %q: PersistentVolumeClaim %q not found; if it will use %s, its keys rotate only through republish",
			v.Name, claimName, contract.DriverName), nil
	case pvc.Spec.VolumeName == "":
		return nil, fmt.Sprintf("rekey: volume %q: PersistentVolumeClaim %q is not bound yet; if it will use %s, its keys rotate only through republish",
			v.Name, claimName, contract.DriverName), nil
	}
	var pv corev1.PersistentVolume
	found, err = in.get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv)
	if err != nil {
		return nil, "", fmt.Errorf("webhook: read PersistentVolume %s: %w", pvc.Spec.VolumeName, err)
	}
	if !found {
		return nil, fmt.Sprintf("rekey: volume %q: PersistentVolume %q of claim %q not found",
			v.Name, pvc.Spec.VolumeName, claimName), nil
	}
	csi := pv.Spec.CSI
	if csi == nil || csi.Driver != contract.DriverName {
		return nil, "", nil
	}
	rv := &rekeyVolume{name: v.Name, volumeID: csi.VolumeHandle, attrs: csi.VolumeAttributes}
	if ref := csi.NodePublishSecretRef; ref != nil {
		rv.secretRef = ref.DeepCopy()
		if rv.secretRef.Namespace == "" {
			rv.secretRef.Namespace = ns
		}
	}
	return rv, "", nil
}

// get reads obj from the cache and, on a miss, from the API server. It
// answers false when neither has the object.
func (in *Injector) get(ctx context.Context, key types.NamespacedName, obj client.Object) (bool, error) {
	err := in.cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && in.live != nil {
		err = in.live.Get(ctx, key, obj)
	}
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, err
	}
}

// sources builds the sidecar's source list and the projected volumes that
// back it, skipping (with a warning) volumes the sidecar cannot serve.
func (in *Injector) sources(ns string, vols []rekeyVolume) ([]contract.Source, []corev1.Volume, admission.Warnings) {
	var (
		sources  []contract.Source
		volumes  []corev1.Volume
		warnings admission.Warnings
	)
	mode := int32(0o444)
	for _, rv := range vols {
		idx := strconv.Itoa(len(sources))
		dir := contract.SidecarSourcesDir + "/" + idx
		src := contract.Source{VolumeID: rv.volumeID, VolumeName: rv.name}
		vol := corev1.Volume{Name: contract.SourceVolumePrefix + idx}
		projected := &corev1.ProjectedVolumeSource{DefaultMode: &mode}
		vol.Projected = projected

		authType := rv.attrs[contract.VolumeAttrAuthType]
		if authType == "" {
			authType = contract.AuthTypeSecret
		}
		switch authType {
		case contract.AuthTypeSecret:
			ref := rv.secretRef
			switch {
			case ref == nil || ref.Name == "":
				warnings = append(warnings, fmt.Sprintf("rekey: volume %q has no nodePublishSecretRef; the sidecar has no keys to watch for it", rv.name))
				continue
			case ref.Namespace != ns:
				warnings = append(warnings, fmt.Sprintf("rekey: volume %q: Secret %s/%s is in another namespace and cannot be projected; that volume rotates only through republish",
					rv.name, ref.Namespace, ref.Name))
				continue
			}
			src.AuthType = contract.AuthTypeSecret
			src.SecretDir = dir
			projected.Sources = []corev1.VolumeProjection{{
				Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}},
			}}
		case contract.AuthTypeRRSA, contract.AuthTypeIRSA:
			audience := rv.attrs[contract.VolumeAttrAudience]
			if audience == "" {
				audience = contract.DefaultAudienceIRSA
				if authType == contract.AuthTypeRRSA {
					audience = contract.DefaultAudienceRRSA
				}
			}
			src.AuthType = authType
			src.TokenFile = dir + "/" + contract.SidecarTokenFile
			src.RoleARN = rv.attrs[contract.VolumeAttrRoleARN]
			src.OIDCProviderARN = rv.attrs[contract.VolumeAttrOIDCProviderARN]
			src.STSEndpoint = rv.attrs[contract.VolumeAttrSTSEndpoint]
			src.Region = rv.attrs[contract.VolumeAttrRegion]
			if src.RoleARN == "" {
				warnings = append(warnings, fmt.Sprintf("rekey: volume %q: authType %s without %s; nothing to assume, skipped",
					rv.name, authType, contract.VolumeAttrRoleARN))
				continue
			}
			if authType == contract.AuthTypeRRSA && src.OIDCProviderARN == "" {
				warnings = append(warnings, fmt.Sprintf("rekey: volume %q: authType rrsa without %s; skipped",
					rv.name, contract.VolumeAttrOIDCProviderARN))
				continue
			}
			expiration := in.cfg.TokenExpirationSeconds
			projected.Sources = []corev1.VolumeProjection{{
				ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: audience, ExpirationSeconds: &expiration, Path: contract.SidecarTokenFile,
				},
			}}
		default:
			warnings = append(warnings, fmt.Sprintf("rekey: volume %q: unknown %s %q (want %s, %s or %s); its keys are not rotated by the sidecar",
				rv.name, contract.VolumeAttrAuthType, authType, contract.AuthTypeSecret, contract.AuthTypeRRSA, contract.AuthTypeIRSA))
			continue
		}
		sources = append(sources, src)
		volumes = append(volumes, vol)
	}
	return sources, volumes, warnings
}

// conflicts answers a warning when the pod already uses one of the names the
// injector would add; injecting anyway would produce an invalid pod.
func conflicts(pod *corev1.Pod, nSources int) string {
	names := map[string]bool{contract.SocketVolumeName: true}
	for i := range nSources {
		names[contract.SourceVolumePrefix+strconv.Itoa(i)] = true
	}
	for _, v := range pod.Spec.Volumes {
		if names[v.Name] {
			return fmt.Sprintf("rekey: pod already has a volume named %q; sidecar not injected", v.Name)
		}
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.Name == contract.SidecarContainerName {
				return fmt.Sprintf("rekey: pod already has a container named %q; sidecar not injected", c.Name)
			}
		}
	}
	return ""
}

// stripPrivateMounts removes from the pod's own containers every mount of
// a volume the injector adds for the sidecar alone: the socket directory
// (whoever can write there could put a socket of its own in place of a
// FUSE server's and collect the keys the sidecar sends it) and the key
// sources. A pod spec may name them in advance, expecting the volumes to
// appear. Each removal is a warning.
func stripPrivateMounts(pod *corev1.Pod) admission.Warnings {
	var warnings admission.Warnings
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			c := &list[i]
			kept := c.VolumeMounts[:0]
			for _, m := range c.VolumeMounts {
				if isPrivateVolume(m.Name) {
					warnings = append(warnings, fmt.Sprintf("rekey: container %q mounted the sidecar's volume %q at %s; that mount was removed "+
						"(only the rekey sidecar may use it)", c.Name, m.Name, m.MountPath))
					continue
				}
				kept = append(kept, m)
			}
			c.VolumeMounts = kept
		}
	}
	return warnings
}

// isPrivateVolume reports whether a volume of an injected pod is the
// sidecar's alone: the socket directory and the key sources.
func isPrivateVolume(name string) bool {
	return name == contract.SocketVolumeName || strings.HasPrefix(name, contract.SourceVolumePrefix)
}

// EphemeralMountDenial decides on an update of a pod's ephemeral
// containers (kubectl debug): it returns why the update must be refused,
// or "" to admit it. An ephemeral container added to an injected pod may
// not mount the sidecar's volumes: whoever can write to the socket
// directory can put a socket in place of a FUSE server's and collect the
// keys the sidecar sends, and the sources hold the keys themselves.
// Ephemeral containers cannot be changed once added, so only new ones are
// looked at. Unlike injection this denies: an ephemeral container cannot be
// admitted with a mount quietly removed, its author asked for it.
func EphemeralMountDenial(old, pod *corev1.Pod) string {
	if pod.Annotations[contract.StatusAnnotation] != contract.StatusInjected {
		return ""
	}
	existing := map[string]bool{}
	if old != nil {
		for _, c := range old.Spec.EphemeralContainers {
			existing[c.Name] = true
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if existing[c.Name] {
			continue
		}
		for _, m := range c.VolumeMounts {
			if isPrivateVolume(m.Name) {
				return fmt.Sprintf("rekey: ephemeral container %q may not mount the sidecar's volume %q "+
					"(only the rekey sidecar may use it: it carries the pod's keys)", c.Name, m.Name)
			}
		}
	}
	return ""
}
