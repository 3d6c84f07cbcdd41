package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"rekey.dev/rekey/internal/contract"
)

func debugPod(injected bool, ephemeral ...corev1.EphemeralContainer) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "ns", Annotations: map[string]string{}}}
	if injected {
		p.Annotations[contract.StatusAnnotation] = contract.StatusInjected
	}
	p.Spec.EphemeralContainers = ephemeral
	return p
}

func debugContainer(name string, mounts ...string) corev1.EphemeralContainer {
	c := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: "busybox"}}
	for _, m := range mounts {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: m, MountPath: "/x/" + m})
	}
	return c
}

func TestEphemeralMountDenial(t *testing.T) {
	src := contract.SourceVolumePrefix + "data"
	cases := []struct {
		name     string
		old, pod *corev1.Pod
		denied   string // substring of the reason; "" for admitted
	}{
		{"debug container without mounts", debugPod(true), debugPod(true, debugContainer("dbg")), ""},
		{"debug container mounting an app volume", debugPod(true), debugPod(true, debugContainer("dbg", "data")), ""},
		{"debug container mounting the socket volume", debugPod(true), debugPod(true, debugContainer("dbg", contract.SocketVolumeName)),
			`"dbg" may not mount the sidecar's volume "` + contract.SocketVolumeName + `"`},
		{"debug container mounting a key source", debugPod(true), debugPod(true, debugContainer("dbg2", "data", src)), src},
		{"pod not injected: nothing of ours to guard", debugPod(false), debugPod(false, debugContainer("dbg", contract.SocketVolumeName)), ""},
		{"an older ephemeral container is not judged again",
			debugPod(true, debugContainer("old", contract.SocketVolumeName)),
			debugPod(true, debugContainer("old", contract.SocketVolumeName), debugContainer("new")), ""},
		{"no old object", nil, debugPod(true, debugContainer("dbg", contract.SocketVolumeName)), "may not mount"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := EphemeralMountDenial(c.old, c.pod)
			if (c.denied == "") != (got == "") || !strings.Contains(got, c.denied) {
				t.Errorf("EphemeralMountDenial = %q, want %q", got, c.denied)
			}
		})
	}
}

// TestEphemeralContainersRequest sends the admission request kubectl debug
// causes through the handler: denied with the reason, and an unrelated
// update of a pod admitted.
func TestEphemeralContainersRequest(t *testing.T) {
	h := NewHandler(nil)
	raw := func(p *corev1.Pod) runtime.RawExtension {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	req := func(sub string, old, pod *corev1.Pod) admission.Request {
		return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "1", Operation: admissionv1.Update, SubResource: sub,
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Object: raw(pod), OldObject: raw(old)}}
	}
	resp := h.Handle(context.Background(), req("ephemeralcontainers", debugPod(true), debugPod(true, debugContainer("dbg", contract.SocketVolumeName))))
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "may not mount") {
		t.Fatalf("response = %+v, want denied", resp.AdmissionResponse)
	}
	resp = h.Handle(context.Background(), req("ephemeralcontainers", debugPod(true), debugPod(true, debugContainer("dbg"))))
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Fatalf("response = %+v, want admitted unchanged", resp.AdmissionResponse)
	}
}
