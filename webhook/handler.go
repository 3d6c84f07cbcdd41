package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// PodDefaulter is controller-runtime's CustomDefaulter typed for Pods and
// able to answer admission warnings, which CustomDefaulter (v0.22) cannot.
type PodDefaulter interface {
	Default(ctx context.Context, pod *corev1.Pod) (admission.Warnings, error)
}

// NewHandler serves d as a mutating admission webhook for Pod creation, and
// guards updates of pods' ephemeral containers (EphemeralMountDenial). Like
// controller-runtime's defaulter it deep-copies the pod, answers a JSON patch
// of only what d changed (see diff), and no patch when d changed nothing. Unlike it, it
// never denies: undecodable objects, other kinds and operations, errors and
// panics all admit the object unchanged (with a warning where useful), since
// a webhook that guards every pod must not take the cluster down with it.
func NewHandler(d PodDefaulter) *admission.Webhook {
	return &admission.Webhook{Handler: &podHandler{defaulter: d}}
}

type podHandler struct {
	defaulter PodDefaulter
}

// Handle implements admission.Handler.
func (h *podHandler) Handle(ctx context.Context, req admission.Request) (resp admission.Response) {
	log := logf.FromContext(ctx)
	defer func() {
		if r := recover(); r != nil {
			log.Error(fmt.Errorf("webhook: panic: %v", r), "Recovered from panic; admitting pod unchanged")
			resp = admission.Allowed("").WithWarnings("rekey: internal error; pod admitted without sidecar")
		}
	}()
	if req.Operation == admissionv1.Update && req.SubResource == "ephemeralcontainers" &&
		req.Kind.Group == "" && req.Kind.Kind == "Pod" {
		return ephemeral(req)
	}
	if req.Operation != admissionv1.Create || req.SubResource != "" ||
		req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return admission.Allowed("")
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		log.V(1).Info("Cannot decode pod; admitting unchanged", "err", err.Error())
		return admission.Allowed("")
	}
	original := pod.DeepCopy()
	ctx = admission.NewContextWithRequest(ctx, req)
	warnings, err := h.defaulter.Default(ctx, pod)
	if err != nil {
		log.Error(err, "Cannot decide on injection; admitting pod unchanged")
		return admission.Allowed("").WithWarnings(append(warnings,
			"rekey: could not inspect the pod's volumes; pod admitted without sidecar")...)
	}
	patches, ok := diff(original, pod)
	if !ok {
		log.Error(errUnpatchable, "Admitting pod unchanged")
		return admission.Allowed("").WithWarnings(append(warnings,
			"rekey: internal error; pod admitted without sidecar")...)
	}
	if len(patches) == 0 {
		return admission.Allowed("").WithWarnings(warnings...)
	}
	return admission.Patched("", patches...).WithWarnings(warnings...)
}

var errUnpatchable = errors.New("webhook: defaulter changed more than annotations, volumes and containers")

// diff expresses the change from original to mutated as JSON patch
// operations on the request's raw object. It handles what an injector does
// (set annotations; append volumes and containers; prepend or append init
// containers) and answers false for any other change. Each operation only
// adds, so fields the raw object has and this package's API types do not
// know (a newer API server) survive: a generic diff of re-encoded objects
// would drop them or misplace paths once a list element shifts.
func diff(original, mutated *corev1.Pod) ([]jsonpatch.JsonPatchOperation, bool) {
	var ops []jsonpatch.JsonPatchOperation
	add := func(path string, v any) {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: path, Value: v})
	}
	// Mounts the injector took from the pod's own containers
	// (stripPrivateMounts): replaced first, at the containers' original
	// indexes, before anything is inserted in front of them.
	original = original.DeepCopy()
	mounts := func(orig, mut []corev1.Container, offset int, path string) {
		for i := range orig {
			if j := i + offset; j >= 0 && j < len(mut) && !apiequality.Semantic.DeepEqual(orig[i].VolumeMounts, mut[j].VolumeMounts) {
				ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "replace",
					Path: path + "/" + strconv.Itoa(i) + "/volumeMounts", Value: mut[j].VolumeMounts})
				orig[i].VolumeMounts = mut[j].VolumeMounts
			}
		}
	}
	mounts(original.Spec.Containers, mutated.Spec.Containers, 0, "/spec/containers")
	mounts(original.Spec.InitContainers, mutated.Spec.InitContainers,
		max(0, len(mutated.Spec.InitContainers)-len(original.Spec.InitContainers)), "/spec/initContainers")
	if len(original.Annotations) == 0 && len(mutated.Annotations) > 0 {
		add("/metadata/annotations", mutated.Annotations)
	} else {
		keys := make([]string, 0, len(mutated.Annotations))
		for k := range mutated.Annotations {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if v, ok := original.Annotations[k]; !ok || v != mutated.Annotations[k] {
				add("/metadata/annotations/"+escapePointer(k), mutated.Annotations[k])
			}
		}
		for k := range original.Annotations {
			if _, ok := mutated.Annotations[k]; !ok {
				return nil, false
			}
		}
	}
	if !appended(original.Spec.Volumes, mutated.Spec.Volumes, "/spec/volumes", add) ||
		!appended(original.Spec.Containers, mutated.Spec.Containers, "/spec/containers", add) {
		return nil, false
	}
	// Init containers: the injector may prepend (native sidecar) or append.
	oi, mi := original.Spec.InitContainers, mutated.Spec.InitContainers
	prefix := len(mi) - len(oi)
	switch {
	case prefix > 0 && len(oi) > 0 && apiequality.Semantic.DeepEqual(oi, mi[prefix:]):
		for i, c := range mi[:prefix] {
			add("/spec/initContainers/"+strconv.Itoa(i), c)
		}
	case !appended(oi, mi, "/spec/initContainers", add):
		return nil, false
	}
	// Nothing else may differ.
	rest := mutated.DeepCopy()
	rest.Annotations = original.Annotations
	rest.Spec.Volumes = original.Spec.Volumes
	rest.Spec.Containers = original.Spec.Containers
	rest.Spec.InitContainers = original.Spec.InitContainers
	return ops, apiequality.Semantic.DeepEqual(rest, original)
}

// appended adds the operations for mutated = original + suffix, and reports
// false when mutated does not start with original.
func appended[T any](original, mutated []T, path string, add func(string, any)) bool {
	if len(mutated) < len(original) || !apiequality.Semantic.DeepEqual(original, mutated[:len(original)]) {
		return false
	}
	suffix := mutated[len(original):]
	switch {
	case len(suffix) == 0:
	case len(original) == 0:
		add(path, suffix)
	default:
		for _, v := range suffix {
			add(path+"/-", v)
		}
	}
	return true
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// ephemeral answers an update of a pod's ephemeral containers: denied if
// EphemeralMountDenial says so, admitted unchanged otherwise (including
// objects it cannot decode: the API server validates those anyway).
func ephemeral(req admission.Request) admission.Response {
	pod, old := &corev1.Pod{}, &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return admission.Allowed("")
	}
	if len(req.OldObject.Raw) == 0 || json.Unmarshal(req.OldObject.Raw, old) != nil {
		old = nil
	}
	if why := EphemeralMountDenial(old, pod); why != "" {
		return admission.Denied(why)
	}
	return admission.Allowed("")
}
