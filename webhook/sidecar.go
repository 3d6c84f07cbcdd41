package webhook

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"rekey.dev/rekey/internal/contract"
)

// podUIDEnv carries the pod UID into the sidecar's arguments.
const podUIDEnv = "REKEY_POD_UID"

// sidecar builds the sidecar container for sources; source i is mounted from
// the i-th of the nSources projected volumes.
func (in *Injector) sidecar(pod *corev1.Pod, sources []contract.Source, nSources int) (corev1.Container, admission.Warnings, error) {
	sourcesJSON, err := json.Marshal(sources)
	if err != nil {
		return corev1.Container{}, nil, fmt.Errorf("webhook: encode sources: %w", err)
	}
	resources, warnings := in.resources(pod.Annotations)
	stsArgs, w := stsDurationArgs(pod.Annotations, sources)
	warnings = append(warnings, w...)
	mounts := []corev1.VolumeMount{{Name: contract.SocketVolumeName, MountPath: contract.SocketDir}}
	for i := range nSources {
		idx := fmt.Sprint(i)
		mounts = append(mounts, corev1.VolumeMount{
			Name:      contract.SourceVolumePrefix + idx,
			MountPath: contract.SidecarSourcesDir + "/" + idx,
			ReadOnly:  true,
		})
	}
	return corev1.Container{
		Name:            contract.SidecarContainerName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Args: append([]string{
			"--" + contract.SidecarSocketDirFlag + "=" + contract.SocketDir,
			"--" + contract.SidecarPodUIDFlag + "=$(" + podUIDEnv + ")",
			"--" + contract.SidecarSourcesFlag + "=" + string(sourcesJSON),
		}, stsArgs...),
		Env: []corev1.EnvVar{{
			Name: podUIDEnv,
			ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.uid"},
			},
		}},
		Resources:                resources,
		VolumeMounts:             mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          in.securityContext(),
	}, warnings, nil
}

// securityContext satisfies the restricted Pod Security Standard.
func (in *Injector) securityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To(in.cfg.UID),
		RunAsGroup:               ptr.To(in.cfg.UID),
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Privileged:               ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// resourcePair is one resource's request and limit, as defaults and as the
// pod's annotations say.
type resourcePair struct {
	name                     corev1.ResourceName
	defRequest, defLimit     string
	requestAnno, limitAnno   string
	request, limit           *resource.Quantity
	requestByPod, limitByPod bool
}

// resources applies the pod's resource annotations over the defaults. A bad
// annotation keeps the default and adds a warning; a request above its limit
// is resolved in favour of what the pod set.
func (in *Injector) resources(annotations map[string]string) (corev1.ResourceRequirements, admission.Warnings) {
	var warnings admission.Warnings
	out := corev1.ResourceRequirements{}
	pairs := []resourcePair{
		{name: corev1.ResourceCPU, defRequest: in.cfg.CPURequest, defLimit: in.cfg.CPULimit,
			requestAnno: contract.SidecarCPURequestAnnotation, limitAnno: contract.SidecarCPULimitAnnotation},
		{name: corev1.ResourceMemory, defRequest: in.cfg.MemoryRequest, defLimit: in.cfg.MemoryLimit,
			requestAnno: contract.SidecarMemoryRequestAnnotation, limitAnno: contract.SidecarMemoryLimitAnnotation},
	}
	for _, p := range pairs {
		p.request, p.requestByPod = pick(annotations, p.requestAnno, p.defRequest, &warnings)
		p.limit, p.limitByPod = pick(annotations, p.limitAnno, p.defLimit, &warnings)
		if p.request != nil && p.limit != nil && p.request.Cmp(*p.limit) > 0 {
			switch {
			case p.requestByPod && p.limitByPod:
				warnings = append(warnings, fmt.Sprintf("rekey: %s (%s) is above %s (%s); both ignored",
					p.requestAnno, p.request, p.limitAnno, p.limit))
				p.request, _ = pick(nil, "", p.defRequest, &warnings)
				p.limit, _ = pick(nil, "", p.defLimit, &warnings)
				if p.request != nil && p.limit != nil && p.request.Cmp(*p.limit) > 0 {
					p.request = p.limit
				}
			case p.requestByPod:
				p.limit = p.request
			default:
				p.request = p.limit
			}
		}
		if p.request != nil {
			if out.Requests == nil {
				out.Requests = corev1.ResourceList{}
			}
			out.Requests[p.name] = *p.request
		}
		if p.limit != nil {
			if out.Limits == nil {
				out.Limits = corev1.ResourceList{}
			}
			out.Limits[p.name] = *p.limit
		}
	}
	return out, warnings
}

// pick answers the annotation's quantity when it parses, else the default
// (nil when the default is empty), and whether the annotation was used.
func pick(annotations map[string]string, key, def string, warnings *admission.Warnings) (*resource.Quantity, bool) {
	if v, ok := annotations[key]; ok {
		q, err := parseQuantity(v)
		if err == nil {
			return &q, true
		}
		*warnings = append(*warnings, fmt.Sprintf("rekey: annotation %s: %v; default kept", key, err))
	}
	if def == "" {
		return nil, false
	}
	q, err := parseQuantity(def)
	if err != nil { // Config.Validate rejects this; keep the pod admissible anyway.
		return nil, false
	}
	return &q, false
}
