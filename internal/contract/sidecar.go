package contract

// The sidecar's configuration is written by the webhook and read by the
// sidecar. It names files and roles, never secret values.
const (
	// SidecarSourcesFlag carries a JSON array of Source, one per volume.
	SidecarSourcesFlag = "sources"
	// SidecarSocketDirFlag names the directory holding the FUSE server sockets.
	SidecarSocketDirFlag = "socket-dir"
	// SidecarSourcesDir is where the webhook mounts each volume's projected
	// Secret or service-account token, one numbered subdirectory per volume
	// (volume handles are not valid path or volume names).
	SidecarSourcesDir = "/var/run/rekey/sources"
	// SidecarTokenFile is the file name of a projected service-account token
	// inside a source directory.
	SidecarTokenFile = "token"
)

// Auth types of the authType volume attribute.
const (
	AuthTypeSecret = "secret"
	AuthTypeRRSA   = "rrsa"
	AuthTypeIRSA   = "irsa"
)

// Source tells the sidecar where one volume's keys come from.
type Source struct {
	// VolumeID is the PV's spec.csi.volumeHandle; the FUSE server reports the
	// same value in its Status, which is how the sidecar pairs them.
	// It is empty for an inline CSI volume, whose handle kubelet derives from
	// the pod UID: see EphemeralVolumeID.
	VolumeID string `json:"volumeId"`
	// VolumeName is the name of the volume in the pod spec.
	VolumeName string `json:"volumeName,omitempty"`
	// AuthType is AuthTypeSecret, AuthTypeRRSA or AuthTypeIRSA.
	AuthType string `json:"authType"`
	// SecretDir is the projected Secret's directory (AuthTypeSecret).
	SecretDir string `json:"secretDir,omitempty"`
	// TokenFile is the projected service-account token (rrsa, irsa).
	TokenFile string `json:"tokenFile,omitempty"`
	// RoleARN is the role to assume (rrsa, irsa).
	RoleARN string `json:"roleArn,omitempty"`
	// OIDCProviderARN is Alibaba's OIDC provider ARN (rrsa).
	OIDCProviderARN string `json:"oidcProviderArn,omitempty"`
	// STSEndpoint is the STS URL (rrsa, irsa); empty means the provider default.
	STSEndpoint string `json:"stsEndpoint,omitempty"`
	// Region is the STS signing region where one is needed.
	Region string `json:"region,omitempty"`
}
