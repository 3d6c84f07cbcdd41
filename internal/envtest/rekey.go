package envtest

import (
	"path/filepath"
	"runtime"
	"testing"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	rekeyv1alpha1 "rekey.dev/rekey/api/v1alpha1"
)

// StartWithCRDs is Start with rekey's CRDs (manifests/crd) installed.
func StartWithCRDs(tb testing.TB) (*rest.Config, *crenvtest.Environment) {
	tb.Helper()
	cfg, env := Start(tb)
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "..", "..", "manifests", "crd")
	if _, err := crenvtest.InstallCRDs(cfg, crenvtest.CRDInstallOptions{Paths: []string{dir}, ErrorIfPathMissing: true}); err != nil {
		tb.Fatalf("install CRDs: %v", err)
	}
	return cfg, env
}

// Client is a controller-runtime client for cfg that knows the built-in
// kinds and rekey's.
func Client(tb testing.TB, cfg *rest.Config) client.Client {
	tb.Helper()
	s := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		tb.Fatal(err)
	}
	if err := rekeyv1alpha1.AddToScheme(s); err != nil {
		tb.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
