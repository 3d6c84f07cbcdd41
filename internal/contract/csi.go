package contract

// Names of the CSI node plugin: volume attributes beyond the webhook's,
// podInfoOnMount keys, Event reasons and node paths.
const (
	// VolumeAttrBucket is the bucket name (required unless the volume
	// handle is csi-s3's "bucket/prefix").
	VolumeAttrBucket = "bucket"
	// VolumeAttrURL is the S3 endpoint URL (required unless the Secret has
	// csi-s3's "endpoint").
	VolumeAttrURL = "url"
	// VolumeAttrPath is the prefix inside the bucket served as the root.
	VolumeAttrPath = "path"
	// VolumeAttrOtherOpts is an ossfs-style "-o k[=v]" option list.
	VolumeAttrOtherOpts = "otherOpts"

	// SecretKeyEndpoint and SecretKeyRegion are csi-s3's Secret entries,
	// accepted when the url and region attributes are not set.
	SecretKeyEndpoint = "endpoint"
	SecretKeyRegion   = "region"

	// PodInfo keys kubelet adds to the volume context with podInfoOnMount.
	PodInfoName           = "csi.storage.k8s.io/pod.name"
	PodInfoNamespace      = "csi.storage.k8s.io/pod.namespace"
	PodInfoUID            = "csi.storage.k8s.io/pod.uid"
	PodInfoServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	// PodInfoServiceAccountTokens is the volume-context entry kubelet adds
	// when the CSIDriver has tokenRequests: JSON mapping each audience to
	// {"token": "...", "expirationTimestamp": "RFC 3339"}. It holds
	// secrets: never log it.
	PodInfoServiceAccountTokens = "csi.storage.k8s.io/serviceAccount.tokens" //nolint:gosec // a volume-context key, not a credential
	// PodInfoEphemeral is "true" for an inline CSI volume.
	PodInfoEphemeral = "csi.storage.k8s.io/ephemeral"

	// EventReasonFUSEServerDied is the Warning Event posted on a pod whose
	// FUSE server exited while the volume was still mounted.
	EventReasonFUSEServerDied = "FUSEServerDied"
	// EventMessageFUSEServerDiedFormat formats it: the volume, then the exit status.
	EventMessageFUSEServerDiedFormat = "FUSE server for %s died (%s); I/O on the volume fails until the pod is restarted: delete the pod so it gets a fresh mount"
	// EventReasonFUSEServerResumed is the Normal Event posted on a pod
	// whose FUSE server died and was replaced on the same connection: the
	// application saw a pause, no error.
	EventReasonFUSEServerResumed = "FUSEServerResumed"
	// EventMessageFUSEServerResumedFormat formats it: the volume, then what
	// happened (exit status, new process, time taken).
	EventMessageFUSEServerResumedFormat = "FUSE server for %s was replaced on its live connection (%s); no I/O failed"
	// EventReasonStagedDataRetained is the Warning Event posted on a pod
	// when data it wrote could not be uploaded and is kept in the mount's
	// staging directory on the node instead (never deleted; see "Recovering
	// retained staged data" in docs/fuse-server.md).
	EventReasonStagedDataRetained = "StagedDataRetained"
	// EventMessageStagedDataRetainedFormat formats it: the volume, the
	// number of objects, the reason, then the object keys.
	EventMessageStagedDataRetainedFormat = "data written to %s was not uploaded and is kept on the node (%d object(s)): %s; objects: %s"
	// EventReasonRepublishFailed is the Warning Event posted when a
	// republish of a live mount could not apply its Secret; the republish
	// itself succeeds.
	EventReasonRepublishFailed = EventReasonRefreshFailed

	// DefaultKubeletRootDir is kubelet's --root-dir default.
	DefaultKubeletRootDir = "/var/lib/kubelet"
	// DefaultSupervisorSocket is the node-local socket of the supervisor.
	DefaultSupervisorSocket = "/var/lib/kubelet/plugins/" + DriverName + "/supervisor.sock"
)

// The per-cluster fingerprint key (package clusterkey): a Secret in rekey's
// namespace that the node plugin creates, and its entry.
const (
	FingerprintKeySecret = "rekey-fingerprint-key" //nolint:gosec // a Secret's name, not a credential
	FingerprintKeyEntry  = "key"
	// DefaultNamespace is where the manifests and the chart install rekey.
	DefaultNamespace = "rekey-system"
)
