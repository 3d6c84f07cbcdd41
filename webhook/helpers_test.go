package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"rekey.dev/rekey/webhook"
)

// fixtures decodes testdata/cluster.yaml.
func fixtures(tb testing.TB) []client.Object {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cluster.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var objs []client.Object
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			tb.Fatalf("cluster.yaml: %v", err)
		}
		obj, _, err := clientgoscheme.Codecs.UniversalDeserializer().Decode(j, nil, nil)
		if err != nil {
			tb.Fatalf("cluster.yaml: %v", err)
		}
		objs = append(objs, obj.(client.Object))
	}
	return objs
}

// newHandler builds the admission webhook over a fake cluster holding the
// fixtures; overrides (JSON of webhook.Config fields) adjust the defaults.
func newHandler(tb testing.TB, overrides json.RawMessage) *admission.Webhook {
	tb.Helper()
	cfg := webhook.DefaultConfig()
	cfg.Image = "registry.example/rekey-sidecar:test"
	if len(overrides) > 0 {
		if err := json.Unmarshal(overrides, &cfg); err != nil {
			tb.Fatalf("config overrides: %v", err)
		}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(fixtures(tb)...).Build()
	inj, err := webhook.NewInjector(cfg, c, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return webhook.NewHandler(inj)
}

// admit sends raw as a Pod CREATE in namespace ns.
func admit(h *admission.Webhook, ns string, raw []byte) admission.Response {
	return h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID("test"),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}})
}

// applyPatches applies resp's JSON patch to raw the way the API server does.
func applyPatches(tb testing.TB, raw []byte, resp admission.Response) []byte {
	tb.Helper()
	if len(resp.Patches) == 0 {
		return raw
	}
	pb, err := json.Marshal(resp.Patches)
	if err != nil {
		tb.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(pb)
	if err != nil {
		tb.Fatalf("decode patch: %v", err)
	}
	out, err := patch.Apply(raw)
	if err != nil {
		tb.Fatalf("apply patch %s: %v", pb, err)
	}
	return out
}
