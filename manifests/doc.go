// Package manifests holds no code: it is the home of the tests that render
// rekey's install manifests (the kustomize bases and overlays in this
// directory, the Helm chart in charts/rekey) with pinned kustomize and helm
// binaries (hack/install-tools.sh), check that both give the same objects,
// decode every object strictly with client-go's scheme and assert the
// properties the design depends on: the privileged driver with Bidirectional
// propagation, one kubelet root directory everywhere, flags the binaries
// define, a restricted webhook, least-privilege RBAC. See docs/install.md.
package manifests
