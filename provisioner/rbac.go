package provisioner

import rbacv1 "k8s.io/api/rbac/v1"

// ClusterRules are the cluster-wide permissions rekey-controller needs:
// claims, volumes and classes for the provision controller, Events, and
// nothing namespaced: Secrets are not among them: the
// provisioner Secrets' namespaces grant get through SecretRules. The
// chart's and kustomize's ClusterRole hold exactly these (a test compares).
func ClusterRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "delete", "patch", "update"}},
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
	}
}

// SecretRules are granted in each namespace that holds provisioner
// Secrets (a Role and RoleBinding there), and nowhere else.
func SecretRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}
}

// LeaseRules are granted in rekey-controller's own namespace for leader
// election.
func LeaseRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}}}
}
