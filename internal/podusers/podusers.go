// Package podusers reads the user namespace kubelet gives a pod with
// `hostUsers: false`: the UID and GID mappings it persists in the pod's
// directory (<kubelet root>/pods/<uid>/userns) when it creates the pod
// sandbox. The node plugin's FUSE server uses it to tell which host UID the
// pod's sidecar runs as, so the sidecar of a pod in a user namespace can
// reach its control socket like any other.
//
// The file is written by kubelet (root) in a directory pods cannot write,
// but it is still parsed against an allowlist: exactly the two fields
// kubelet writes, at most MaxMappings ranges each, no range that wraps.
package podusers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// FileName is the name of kubelet's mappings file in a pod's directory.
const FileName = "userns"

// MaxMappings is the kernel's limit on ranges in one uid_map or gid_map.
const MaxMappings = 340

// maxFileSize bounds what is read; 340 ranges of both kinds take ~50 KiB.
const maxFileSize = 128 << 10

// ErrInvalid is wrapped by every error about the file's content.
var ErrInvalid = errors.New("podusers: invalid user namespace mappings")

// Range maps Length IDs from ContainerID in the pod to HostID on the node.
type Range struct {
	HostID      uint32 `json:"hostId"`
	ContainerID uint32 `json:"containerId"`
	Length      uint32 `json:"length"`
}

// Mappings are a pod's UID and GID mappings.
type Mappings struct {
	UIDs []Range `json:"uidMappings"`
	GIDs []Range `json:"gidMappings"`
}

// Read reads the mappings file at path. A missing file is an error that
// wraps fs.ErrNotExist: the pod has no user namespace (yet).
func Read(path string) (Mappings, error) {
	f, err := os.Open(path)
	if err != nil {
		return Mappings{}, fmt.Errorf("podusers: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return Mappings{}, fmt.Errorf("podusers: read %s: %w", path, err)
	}
	return Parse(b)
}

// Parse checks and decodes the content of a mappings file.
func Parse(b []byte) (Mappings, error) {
	if len(b) > maxFileSize {
		return Mappings{}, fmt.Errorf("%w: more than %d bytes", ErrInvalid, maxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Mappings
	if err := dec.Decode(&m); err != nil {
		// json errors may quote input; say only what kind of problem it is.
		return Mappings{}, fmt.Errorf("%w: not the JSON object kubelet writes (uidMappings, gidMappings)", ErrInvalid)
	}
	if dec.More() {
		return Mappings{}, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	for _, c := range []struct {
		name   string
		ranges []Range
	}{{"uidMappings", m.UIDs}, {"gidMappings", m.GIDs}} {
		if len(c.ranges) == 0 || len(c.ranges) > MaxMappings {
			return Mappings{}, fmt.Errorf("%w: %s has %d ranges, want 1 to %d", ErrInvalid, c.name, len(c.ranges), MaxMappings)
		}
		for i, r := range c.ranges {
			if r.Length == 0 || uint64(r.HostID)+uint64(r.Length) > 1<<32 || uint64(r.ContainerID)+uint64(r.Length) > 1<<32 {
				return Mappings{}, fmt.Errorf("%w: %s range %d is empty or passes 2^32", ErrInvalid, c.name, i)
			}
		}
	}
	return m, nil
}

// HostUID is the node's UID for the pod's UID id; ok is false if the
// mappings do not cover it.
func (m Mappings) HostUID(id uint32) (uint32, bool) { return lookup(m.UIDs, id) }

// HostGID is the node's GID for the pod's GID id.
func (m Mappings) HostGID(id uint32) (uint32, bool) { return lookup(m.GIDs, id) }

func lookup(ranges []Range, id uint32) (uint32, bool) {
	for _, r := range ranges {
		if id >= r.ContainerID && uint64(id) < uint64(r.ContainerID)+uint64(r.Length) {
			return r.HostID + (id - r.ContainerID), true
		}
	}
	return 0, false
}
