package webhook_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"rekey.dev/rekey/webhook"
)

// TestHandlerOddInput checks that requests the webhook has no business with
// are admitted unchanged.
func TestHandlerOddInput(t *testing.T) {
	h := newHandler(t, nil)
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"labeled","annotations":{"rekey.dev/inject":"true"}},` +
		`"spec":{"volumes":[{"name":"v","csi":{"driver":"s3.rekey.dev","nodePublishSecretRef":{"name":"s"}}}]}}`
	podKind := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	for name, req := range map[string]admissionv1.AdmissionRequest{
		"delete":          {Kind: podKind, Operation: admissionv1.Delete, Namespace: "labeled", OldObject: runtime.RawExtension{Raw: []byte(pod)}},
		"update":          {Kind: podKind, Operation: admissionv1.Update, Namespace: "labeled", Object: runtime.RawExtension{Raw: []byte(pod)}},
		"subresource":     {Kind: podKind, Operation: admissionv1.Create, SubResource: "binding", Namespace: "labeled", Object: runtime.RawExtension{Raw: []byte(pod)}},
		"not a pod":       {Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(pod)}},
		"empty object":    {Kind: podKind, Operation: admissionv1.Create, Namespace: "labeled"},
		"malformed":       {Kind: podKind, Operation: admissionv1.Create, Namespace: "labeled", Object: runtime.RawExtension{Raw: []byte(`{"spec":`)}},
		"wrong types":     {Kind: podKind, Operation: admissionv1.Create, Namespace: "labeled", Object: runtime.RawExtension{Raw: []byte(`{"spec":{"volumes":"x"}}`)}},
		"null":            {Kind: podKind, Operation: admissionv1.Create, Namespace: "labeled", Object: runtime.RawExtension{Raw: []byte(`null`)}},
		"no namespace":    {Kind: podKind, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(`{"metadata":{"annotations":{"rekey.dev/inject":"true"}}}`)}},
		"empty pvc claim": {Kind: podKind, Operation: admissionv1.Create, Namespace: "labeled", Object: runtime.RawExtension{Raw: []byte(`{"spec":{"volumes":[{"name":"v","persistentVolumeClaim":{}}]}}`)}},
	} {
		t.Run(name, func(t *testing.T) {
			resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: req})
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Errorf("got allowed=%v patches=%v, want allowed without patch", resp.Allowed, resp.Patches)
			}
		})
	}
}

type failingDefaulter struct {
	err   error
	panic bool
}

func (f failingDefaulter) Default(context.Context, *corev1.Pod) (admission.Warnings, error) {
	if f.panic {
		panic("boom")
	}
	return nil, f.err
}

// TestHandlerNeverDenies checks that errors and panics admit the pod with a
// warning instead of blocking it.
func TestHandlerNeverDenies(t *testing.T) {
	for name, d := range map[string]failingDefaulter{
		"error": {err: errors.New("cache unavailable")},
		"panic": {panic: true},
	} {
		t.Run(name, func(t *testing.T) {
			resp := admit(webhook.NewHandler(d), "labeled", []byte(`{"metadata":{"name":"p"}}`))
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Fatalf("got allowed=%v patches=%v", resp.Allowed, resp.Patches)
			}
			if len(resp.Warnings) != 1 || !strings.HasPrefix(resp.Warnings[0], "rekey: ") {
				t.Errorf("warnings = %q, want one rekey warning", resp.Warnings)
			}
		})
	}
}

// TestHugePod admits a pod with thousands of volumes and containers.
func TestHugePod(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"metadata":{"name":"huge","namespace":"labeled"},"spec":{"containers":[`)
	for i := range 500 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"name":"c` + itoa(i) + `","image":"x"}`)
	}
	b.WriteString(`],"volumes":[`)
	for i := range 5000 {
		b.WriteString(`{"name":"v` + itoa(i) + `","persistentVolumeClaim":{"claimName":"missing-` + itoa(i%7) + `"}},`)
	}
	b.WriteString(`{"name":"data","persistentVolumeClaim":{"claimName":"data"}}]}}`)
	raw := []byte(b.String())
	resp := admit(newHandler(t, nil), "labeled", raw)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("allowed=%v patches=%d, want an injection", resp.Allowed, len(resp.Patches))
	}
	applyPatches(t, raw, resp)
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
