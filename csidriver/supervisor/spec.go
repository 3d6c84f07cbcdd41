package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"time"
)

// Spec describes one mount's FUSE server. It holds no secret and is what
// the supervisor keeps in its state directory.
type Spec struct {
	// Target is the mount point; MountID is derived from it.
	Target string `json:"target"`
	// VolumeID is the CSI volume handle.
	VolumeID string `json:"volumeId"`
	// Endpoint, Region, Bucket, Prefix and Options configure rekey-fuse.
	Endpoint string `json:"endpoint"`
	Region   string `json:"region,omitempty"`
	Bucket   string `json:"bucket"`
	Prefix   string `json:"prefix,omitempty"`
	Options  string `json:"options,omitempty"`
	// AuthType, SecretRef and RoleARN are reported by the server's Status.
	AuthType  string `json:"authType,omitempty"`
	SecretRef string `json:"secretRef,omitempty"`
	RoleARN   string `json:"roleArn,omitempty"`
	// Pod identifies the consuming pod (podInfoOnMount), for Events.
	PodName      string `json:"podName,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodUID       string `json:"podUid,omitempty"`
	// PodSocket is where the server creates a second control socket for
	// the pod's sidecar (inside its rekey-sockets emptyDir), once that
	// directory exists (rekey-fuse --pod-socket). Empty: no pod socket.
	PodSocket string `json:"podSocket,omitempty"`
	// SocketUID owns the control socket (the sidecar's UID).
	SocketUID int `json:"socketUid"`
	// ConnectionID is the fusectl number of the mount's FUSE connection.
	ConnectionID uint32 `json:"connectionId"`
}

// MountID names a mount in the state directory and the supervisor's API.
func MountID(target string) string {
	sum := sha256.Sum256([]byte(target))
	return hex.EncodeToString(sum[:12])
}

// Descriptors are the two files that keep a mount alive across the death
// of its FUSE server: the mounted /dev/fuse connection (its last close
// aborts the mount) and the key custody memfd (package keycustody). The
// driver and the supervisor each hold copies, so neither one's death, nor
// a server's, loses them.
type Descriptors struct {
	Fuse    *os.File
	Custody *os.File // nil: the supervisor makes one
}

// Close closes the files that are set.
func (d Descriptors) Close() {
	for _, f := range []*os.File{d.Fuse, d.Custody} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// Info is a running (or dead, not yet stopped) mount.
type Info struct {
	Spec Spec `json:"spec"`
	// ID is MountID(Spec.Target).
	ID string `json:"id"`
	// PID is the FUSE server's process ID.
	PID int `json:"pid"`
	// ControlSocket is the server's control API socket.
	ControlSocket string `json:"controlSocket"`
	// Started is when the server started serving.
	Started time.Time `json:"started"`
	// Dead is set once the server exited while mounted.
	Dead bool `json:"dead,omitempty"`
	// Adopted is set when this supervisor found the server running.
	Adopted bool `json:"adopted,omitempty"`
	// EventSequence is the sequence of the server's last event that
	// reached a subscriber (WatchEvents after_sequence on adoption).
	EventSequence uint64 `json:"eventSequence,omitempty"`
	// Resumes counts how often a new server took over the connection
	// after its server died.
	Resumes int `json:"resumes,omitempty"`
	// Owner is the instance of the supervisor container that runs the
	// server (owner.go); empty in state written before hand-off existed.
	Owner string `json:"owner,omitempty"`
	// Version is the rekey version of the supervisor that started the
	// server, which runs the rekey-fuse of the same image.
	Version string `json:"version,omitempty"`
	// HandOffs counts how often the mount moved to a new supervisor
	// (handoff.go).
	HandOffs int `json:"handOffs,omitempty"`
}

// Event kinds besides the FUSE server's own (applied, refused, reported).
const (
	EventDied = "died"
	// EventResumed: a server died and a new one took over its connection.
	EventResumed = "resumed"
	// EventHandedOver: a new supervisor took the mount over from an older
	// one and runs its server now (handoff.go).
	EventHandedOver = "handedover"
)

// Event is a FUSE server's swap outcome or report, or its death.
type Event struct {
	Kind        string    `json:"kind"`
	MountID     string    `json:"mountId"`
	Spec        Spec      `json:"spec"`
	Reason      string    `json:"reason,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Source      string    `json:"source,omitempty"`
	Time        time.Time `json:"time"`
	// Keys are the objects of an EventStagedDataRetained.
	Keys []string `json:"keys,omitempty"`
}
