package manifests_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"rekey.dev/rekey/provisioner"
)

// TestController: manifests/overlays/controller adds rekey-controller with
// exactly the permissions the provisioner needs (its envtest runs as a user
// holding these rules), Secrets only through namespaced Roles, two
// replicas with leader election, flags the binary defines, and the node
// plugin's image; the default install has no controller.
func TestController(t *testing.T) {
	in := load(t, "overlays/controller")
	if diff := cmp.Diff(provisioner.ClusterRules(), find[*rbacv1.ClusterRole](t, in, "rekey-controller").Rules); diff != "" {
		t.Errorf("ClusterRole rekey-controller (-want +got):\n%s", diff)
	}
	var secretRoles, leaseRoles int
	for _, o := range in.all {
		r, ok := o.(*rbacv1.Role)
		if !ok {
			continue
		}
		switch r.Name {
		case "rekey-controller-secrets":
			secretRoles++
			if diff := cmp.Diff(provisioner.SecretRules(), r.Rules); diff != "" {
				t.Errorf("Role %s/%s (-want +got):\n%s", r.Namespace, r.Name, diff)
			}
		case "rekey-controller-leader-election":
			leaseRoles++
			if diff := cmp.Diff(provisioner.LeaseRules(), r.Rules); diff != "" {
				t.Errorf("Role %s (-want +got):\n%s", r.Name, diff)
			}
		}
	}
	if secretRoles != 1 || leaseRoles != 1 {
		t.Errorf("%d secret Roles, %d lease Roles; want 1 each", secretRoles, leaseRoles)
	}
	d := find[*appsv1.Deployment](t, in, "rekey-controller")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	defined := definedFlags(t, "../cmd/rekey-controller/main.go")
	for _, a := range c.Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !defined[name] {
			t.Errorf("arg %s: rekey-controller defines no such flag", a)
		}
	}
	if _, ok := flagValue(c.Args, "namespace"); !ok {
		t.Error("no --namespace: leader election needs it")
	}
	ds := find[*appsv1.DaemonSet](t, in, "rekey-csi-node")
	if c.Image != ds.Spec.Template.Spec.Containers[0].Image || !slices.Equal(c.Command, []string{"/rekey-controller"}) {
		t.Errorf("controller runs %s %v, want the node plugin's image %s and /rekey-controller", c.Image, c.Command, ds.Spec.Template.Spec.Containers[0].Image)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || d.Spec.Template.Spec.SecurityContext.RunAsNonRoot == nil {
		t.Error("the controller must run non-root with a read-only root filesystem")
	}
	for _, o := range load(t, defaultDir).all {
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == "rekey-controller" {
			t.Error("the default install includes rekey-controller; it is opt-in")
		}
	}
}
