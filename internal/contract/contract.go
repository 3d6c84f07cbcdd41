// Package contract holds the public names that several rekey binaries share:
// the CSI driver name, the opt-in label and annotations, the socket
// directory, the sidecar identity and the Event reasons. Users write these
// names into YAML, so they change only together with docs/ and the
// architecture contract.
package contract

const (
	// DriverName is the CSI driver name used in PersistentVolumes.
	DriverName = "s3.rekey.dev"

	// InjectionLabel on a namespace opts every pod in it into sidecar injection
	// when its value is InjectionEnabled.
	InjectionLabel = "rekey.dev/injection"
	// InjectionEnabled is the value of InjectionLabel that enables injection.
	InjectionEnabled = "enabled"
	// InjectAnnotation on a pod opts it in ("true") or out ("false").
	InjectAnnotation = "rekey.dev/inject"
	// StatusAnnotation marks a pod the webhook has already mutated.
	StatusAnnotation = "rekey.dev/status"
	// StatusInjected is the value of StatusAnnotation after injection.
	StatusInjected = "injected"

	// SidecarContainerName is the name of the injected container.
	SidecarContainerName = "rekey-sidecar"
	// SocketVolumeName is the emptyDir shared by the sidecar and the FUSE servers.
	SocketVolumeName = "rekey-sockets"
	// SocketDir is where SocketVolumeName is mounted in the sidecar.
	SocketDir = "/run/rekey"
	// SocketSuffix ends the file name of every FUSE server control socket.
	SocketSuffix = ".sock"
	// SidecarUID is the default UID (and GID) of the sidecar; it owns the sockets.
	SidecarUID = 65532

	// EventReasonRefreshFailed is the reason of the Warning Event posted on a
	// pod when new keys could not be applied.
	EventReasonRefreshFailed = "CredentialRefreshFailed"
	// EventReasonRefreshed is the reason of the Normal Event posted on a pod
	// when new keys were applied.
	EventReasonRefreshed = "CredentialRefreshed"
	// EventMessageFailedFormat formats the failure Event: volume, then reason.
	EventMessageFailedFormat = "failed to refresh ak/sk for %s, reason: %s"
)

// Secret keys accepted for static credentials. Each group is one naming
// convention: rekey/ACK OSS, csi-s3 and AWS style, and the STS form.
const (
	SecretKeyAkID            = "akId"
	SecretKeyAkSecret        = "akSecret"
	SecretKeyAccessKeyID     = "accessKeyID"
	SecretKeySecretAccessKey = "secretAccessKey"
	SecretKeySTSAccessKeyID  = "AccessKeyId"
	SecretKeySTSSecret       = "AccessKeySecret"
	SecretKeySTSToken        = "SecurityToken"
	SecretKeySTSExpiration   = "Expiration"
)
