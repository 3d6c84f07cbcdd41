// Package envtest starts a kube-apiserver and etcd for tests through
// controller-runtime's envtest, with the binaries that tests/cluster/build.sh
// builds and names in KUBEBUILDER_ASSETS. Without that variable a test is
// skipped, or failed when CI=true, so a CI run never passes by skipping.
package envtest

import (
	"os"
	"testing"

	"k8s.io/client-go/rest"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv is the variable naming the directory of kube-apiserver and etcd.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// notSet is the skip (or failure) message when AssetsEnv is empty.
const notSet = AssetsEnv + " is not set; run: export " + AssetsEnv + "=\"$(tests/cluster/build.sh)\""

// Assets answers the directory of kube-apiserver and etcd. It skips the test
// when KUBEBUILDER_ASSETS is not set, fails it then under CI=true, and fails
// it when the directory does not exist.
func Assets(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv(AssetsEnv)
	if dir == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal(notSet)
		}
		tb.Skip(notSet)
	}
	if _, err := os.Stat(dir); err != nil { //nolint:gosec // the test runner names the directory
		tb.Fatalf("%s: %v", AssetsEnv, err)
	}
	return dir
}

// Start starts a kube-apiserver and etcd from Assets and stops them when the
// test ends. It answers the admin configuration and the environment, whose
// ControlPlane can add further users.
func Start(tb testing.TB) (*rest.Config, *crenvtest.Environment) {
	tb.Helper()
	env := &crenvtest.Environment{BinaryAssetsDirectory: Assets(tb)}
	cfg, err := env.Start()
	if err != nil {
		tb.Fatalf("start envtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Logf("stop envtest: %v", err)
		}
	})
	return cfg, env
}
