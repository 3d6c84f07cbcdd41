// Package v1alpha1 is the rekey.dev/v1alpha1 API: RekeyVolumeStatus, the
// node plugin's record of the keys each pod's volume runs on. The deep-copy
// code and the CRD under manifests/crd are generated from these types by
// controller-gen (hack/generate.sh; make generate).
//
// +kubebuilder:object:generate=true
// +groupName=rekey.dev
package v1alpha1
