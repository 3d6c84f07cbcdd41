package contract

import (
	"crypto/sha256"
	"fmt"
)

// Pod annotations that override the injected sidecar's resources. Values are
// Kubernetes quantities ("50m", "32Mi"); the webhook rejects nothing for a bad
// value, it keeps the default and answers an admission warning.
const (
	SidecarCPURequestAnnotation    = "rekey.dev/sidecar-cpu-request"
	SidecarCPULimitAnnotation      = "rekey.dev/sidecar-cpu-limit"
	SidecarMemoryRequestAnnotation = "rekey.dev/sidecar-memory-request"
	SidecarMemoryLimitAnnotation   = "rekey.dev/sidecar-memory-limit"
)

// SidecarSTSDurationAnnotation on a pod sets the lifetime of the temporary
// keys the injected sidecar asks STS for (its SidecarSTSDurationFlag), for
// rrsa/irsa volumes. The value is a Go duration ("1h", "90m") of whole
// seconds within the range STS accepts; a bad value keeps the STS default and
// the webhook answers an admission warning.
const SidecarSTSDurationAnnotation = "rekey.dev/sidecar-sts-duration"

const (
	// SidecarPodUIDFlag carries the pod's UID (from the downward API). The
	// sidecar needs it to compute EphemeralVolumeID for inline volumes.
	SidecarPodUIDFlag = "pod-uid"
	// SourceVolumePrefix starts the name of every per-volume projected volume
	// the webhook adds ("rekey-source-0", "rekey-source-1", ...).
	SourceVolumePrefix = "rekey-source-"

	// VolumeAttrAuthType is the PV (or inline CSI volume) attribute naming
	// the auth type: AuthTypeSecret (default), AuthTypeRRSA or AuthTypeIRSA.
	VolumeAttrAuthType = "authType"
	// VolumeAttrRoleARN is the role to assume (rrsa, irsa).
	VolumeAttrRoleARN = "roleArn"
	// VolumeAttrOIDCProviderARN is Alibaba's OIDC provider ARN (rrsa).
	VolumeAttrOIDCProviderARN = "oidcProviderArn"
	// VolumeAttrSTSEndpoint is the STS URL (rrsa, irsa).
	VolumeAttrSTSEndpoint = "stsEndpoint"
	// VolumeAttrRegion is the bucket's (and STS signing) region.
	VolumeAttrRegion = "region"
	// VolumeAttrAudience is the audience of the projected token (rrsa, irsa).
	VolumeAttrAudience = "audience"

	// DefaultAudienceRRSA is the token audience Alibaba's STS expects.
	DefaultAudienceRRSA = "sts.aliyuncs.com"
	// DefaultAudienceIRSA is the token audience AWS STS expects.
	DefaultAudienceIRSA = "sts.amazonaws.com"
)

// EphemeralVolumeID is the volume handle kubelet gives an inline (ephemeral)
// CSI volume: "csi-" and the hex SHA-256 of the pod UID followed by the pod's
// volume name (kubernetes pkg/volume/csi makeVolumeHandle). Admission runs
// before the pod has a UID, so the webhook leaves Source.VolumeID empty for
// such volumes and the sidecar computes it from --pod-uid and
// Source.VolumeName.
func EphemeralVolumeID(podUID, volumeName string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(podUID+volumeName)))
}
