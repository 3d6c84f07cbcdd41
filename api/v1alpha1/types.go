package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// GroupVersion is rekey.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "rekey.dev", Version: "v1alpha1"}

// Kind and resource names of RekeyVolumeStatus.
const (
	Kind     = "RekeyVolumeStatus"
	Resource = "rekeyvolumestatuses"
)

// AddToScheme registers the types of this package.
var AddToScheme = func(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &RekeyVolumeStatus{}, &RekeyVolumeStatusList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Labels the node plugin sets on each RekeyVolumeStatus, for selecting
// them without reading every object.
const (
	// LabelNode is the node the mount is on.
	LabelNode = "rekey.dev/node"
	// LabelPod is the name of the pod that uses the volume.
	LabelPod = "rekey.dev/pod"
)

// RekeyVolumeStatus records which keys one pod's volume runs on. The node
// plugin that mounted it writes it; it is owned by the pod and is deleted
// with it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=rvs,categories=rekey
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.podName`
// +kubebuilder:printcolumn:name="Volume",type=string,JSONPath=`.status.volumeId`
// +kubebuilder:printcolumn:name="Auth",type=string,JSONPath=`.status.keySource.authType`
// +kubebuilder:printcolumn:name="Fingerprint",type=string,JSONPath=`.status.fingerprint`
// +kubebuilder:printcolumn:name="Applied",type=date,JSONPath=`.status.appliedAt`
// +kubebuilder:printcolumn:name="Refused",type=string,JSONPath=`.status.lastRefusal.reason`,priority=1
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.node`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RekeyVolumeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Status is what the node plugin observed.
	// +optional
	Status VolumeKeyStatus `json:"status,omitempty"`
}

// VolumeKeyStatus is the state of one mount's keys.
type VolumeKeyStatus struct {
	// PodName and PodUID identify the pod that uses the volume.
	PodName string    `json:"podName"`
	PodUID  types.UID `json:"podUID"`
	// VolumeID is the volume's CSI handle.
	VolumeID string `json:"volumeId"`
	// MountID names the mount on its node (a hash of the target path).
	MountID string `json:"mountId"`
	// Node is the node the mount is on.
	Node string `json:"node"`
	// KeySource is where the keys are expected to come from.
	KeySource KeySource `json:"keySource"`
	// Fingerprint identifies the keys in use: the access key ID and a hash
	// keyed with the cluster's fingerprint key (Secret
	// rekey-fingerprint-key). Empty: not known yet.
	// +optional
	Fingerprint string `json:"fingerprint,omitempty"`
	// Expiration is when the keys in use expire; unset for keys that do not.
	// +optional
	Expiration *metav1.Time `json:"expiration,omitempty"`
	// AppliedAt is when the keys in use were applied (mounted with or swapped in).
	// +optional
	AppliedAt *metav1.Time `json:"appliedAt,omitempty"`
	// AppliedBy is who delivered the keys in use: "csi-publish" (mount),
	// "csi-republish" (kubelet's periodic republish), "csi-rrsa"/"csi-irsa"
	// (the node plugin's token exchange), or the sidecar's source.
	// +optional
	AppliedBy string `json:"appliedBy,omitempty"`
	// LastRefusal is the most recent failure to apply keys, if any.
	// +optional
	LastRefusal *Refusal `json:"lastRefusal,omitempty"`
	// NodePluginVersion is the version of the node plugin that started the
	// mount's FUSE server.
	// +optional
	NodePluginVersion string `json:"nodePluginVersion,omitempty"`
	// Resumes counts how often the mount's FUSE server died and was
	// replaced on its live connection, as seen by this node plugin.
	// +optional
	Resumes int32 `json:"resumes,omitempty"`
	// UpdatedAt is when the node plugin last wrote this status.
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`
}

// KeySource says where the keys come from. CSI does not tell a node plugin
// the name of a volume's nodePublishSecretRef Secret: kubectl rekey finds
// it in the pod's inline volume or the PersistentVolume.
type KeySource struct {
	// AuthType is the volume's authType: secret, rrsa or irsa.
	AuthType string `json:"authType"`
	// RoleARN is the role assumed for rrsa and irsa volumes.
	// +optional
	RoleARN string `json:"roleArn,omitempty"`
}

// Refusal is a failure to apply keys; the keys in use stayed.
type Refusal struct {
	// Time is when it happened.
	Time metav1.Time `json:"time"`
	// Reason says why, as in the pod's CredentialRefreshFailed Event.
	Reason string `json:"reason"`
	// Source is who sent the refused keys, or reported the failure.
	// +optional
	Source string `json:"source,omitempty"`
}

// RekeyVolumeStatusList is a list of RekeyVolumeStatus.
//
// +kubebuilder:object:root=true
type RekeyVolumeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RekeyVolumeStatus `json:"items"`
}
