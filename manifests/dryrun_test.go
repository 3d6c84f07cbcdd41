package manifests_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"rekey.dev/rekey/internal/envtest"
)

// warnings collects the API server's warning headers.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// TestServerSideDryRun sends every object of every variant to a real
// kube-apiserver (envtest) as a dry-run create: the API server's own
// validation (immutable CSIDriver fields, webhook configuration rules, PDB,
// DaemonSet and RBAC validation) must accept them, without warnings. The
// namespace is created for real first. cert-manager's kinds are skipped
// (no CRDs). Skipped without KUBEBUILDER_ASSETS, failed when CI=true.
func TestServerSideDryRun(t *testing.T) {
	envtest.Assets(t)
	streams := map[string][]byte{}
	for _, v := range variants {
		streams[v.name] = kustomizeBuild(t, v.kustomize) // before starting the API server: skips early
	}
	logf.SetLogger(logr.Discard())
	cfg, _ := envtest.Start(t)
	w := &warnings{}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// The namespace first (for real): namespaced dry-runs need it.
	for _, o := range split(t, streams["default"]) {
		if o.str("kind") == "Namespace" {
			if err := c.Create(ctx, &unstructured.Unstructured{Object: o}); err != nil {
				t.Fatalf("%s: create: %v", o.key(), err)
			}
		}
	}
	for _, v := range variants {
		objs := split(t, streams[v.name])
		for _, k := range keys(objs) {
			o := objs[k]
			if o.str("kind") == "Namespace" || strings.HasPrefix(o.str("apiVersion"), "cert-manager.io/") {
				continue
			}
			if err := c.Create(ctx, &unstructured.Unstructured{Object: o}, client.DryRunAll); err != nil {
				t.Errorf("%s %s: dry-run create: %v", v.name, k, err)
			}
		}
	}
	if len(w.msgs) > 0 {
		t.Errorf("API server warnings: %q", w.msgs)
	}
}
