package rekeyctl

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
)

// ErrUsage marks a command line that cannot work.
var ErrUsage = errors.New("usage")

// SplitRef parses "namespace/name".
func SplitRef(ref string) (string, string, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%w: %q is not NAMESPACE/NAME", ErrUsage, ref)
	}
	return ns, name, nil
}

// explain turns an API error into one that says what to do.
func explain(err error, what, namespace string) error {
	where := "in all namespaces"
	if namespace != "" {
		where = "in namespace " + namespace
	}
	switch {
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err) && strings.Contains(what, "RekeyVolumeStatus"):
		return fmt.Errorf("%s: the RekeyVolumeStatus CRD is not installed; install rekey's CRD "+
			"(kubectl apply -k manifests/crd, or the Helm chart's crds/) and a node plugin that writes it: %w", what, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s %s: permission denied; ask for get/list on it (the rekey-volume-status-viewer role is part of view; "+
			"reading Secrets, PersistentVolumes and %s needs an administrator): %w", what, where, "the fingerprint key", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the API server does not accept your credentials; check your kubeconfig (kubectl auth whoami): %w", what, err)
	}
	return fmt.Errorf("%s %s: %w", what, where, err)
}
