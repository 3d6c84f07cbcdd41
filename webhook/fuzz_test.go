package webhook_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzInject sends arbitrary objects through the admission handler. It must
// never panic (the handler's own recover is detected through its warning),
// never deny, produce patches that apply to the raw object, and leave the
// patched pod alone on a second pass.
func FuzzInject(f *testing.F) {
	for _, c := range goldenCases(f) {
		f.Add([]byte(c.in.Pod), c.namespace(f))
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "namespace-label.out.json")); err == nil {
		f.Add(b, "labeled")
	}
	f.Add([]byte(`{"spec":{"volumes":[{"name":"v","csi":{"driver":"s3.rekey.dev","volumeAttributes":{"authType":"rrsa"}}}]},"metadata":{"annotations":{"rekey.dev/inject":"true"}}}`), "plain")
	f.Add([]byte(`{"metadata":{"annotations":{"rekey.dev/inject":"true","rekey.dev/sidecar-cpu-request":"1e1000"}},"spec":{"volumes":[{"name":"rekey-source-0","csi":{"driver":"s3.rekey.dev","nodePublishSecretRef":{"name":"s"}}}]}}`), "plain")
	f.Add([]byte(`[]`), "")
	h := newHandler(f, nil)
	f.Fuzz(func(t *testing.T, raw []byte, ns string) {
		resp := admit(h, ns, raw)
		if !resp.Allowed {
			t.Fatalf("denied: %+v", resp.Result)
		}
		for _, w := range resp.Warnings {
			if strings.Contains(w, "internal error") {
				t.Fatalf("handler recovered from a failure: %q", w)
			}
		}
		if len(resp.Patches) == 0 {
			return
		}
		patched := applyPatches(t, raw, resp)
		var pod corev1.Pod
		if err := json.Unmarshal(patched, &pod); err != nil {
			t.Fatalf("patched pod does not decode: %v", err)
		}
		again := admit(h, ns, patched)
		if len(again.Patches) != 0 {
			t.Fatalf("second pass patched %v", again.Patches)
		}
		if !bytes.Contains(patched, []byte("rekey-sidecar")) {
			t.Fatal("patched pod has no sidecar")
		}
	})
}
