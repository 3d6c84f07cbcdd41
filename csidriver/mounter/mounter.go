// Package mounter is the node plugin's seam to the kernel: it mounts a FUSE
// filesystem on an open /dev/fuse descriptor (mount(2) with fd=N, so no
// fusermount binary is needed on the host), unmounts with a lazy fallback
// for a dead server, and aborts a FUSE connection through fusectl. The node
// service takes an Interface, so tests can substitute a fake.
package mounter

import (
	"errors"
	"os"

	"k8s.io/mount-utils"
)

// ErrUnsupported is returned on platforms without FUSE.
var ErrUnsupported = errors.New("mounter: FUSE mounts are only supported on Linux")

// FUSEOptions describe one FUSE mount.
type FUSEOptions struct {
	// Source is shown as the mount's source, e.g. "rekey:bucket".
	Source string
	// Subtype makes the filesystem type "fuse.<Subtype>".
	Subtype string
	// AllowOther lets users other than root use the mount.
	AllowOther bool
	// ReadOnly mounts read-only (MS_RDONLY).
	ReadOnly bool
	// MaxRead bounds read requests (bytes); 0 leaves the kernel default.
	MaxRead int
}

// Interface is what the node service needs from the kernel.
type Interface interface {
	// IsMountPoint reports whether target is a mount point. A mount whose
	// FUSE server is gone ("transport endpoint is not connected") is
	// reported as mounted, with Corrupted set.
	IsMountPoint(target string) (mounted, corrupted bool, err error)
	// MountFUSE opens /dev/fuse, mounts it on target and returns the
	// descriptor, which the caller hands to a FUSE server.
	MountFUSE(target string, o FUSEOptions) (*os.File, error)
	// Unmount unmounts target; if that fails because the server is dead or
	// the mount is busy, it aborts the connection and detaches lazily.
	// A target that is not mounted is not an error.
	Unmount(target string) error
	// Abort aborts the FUSE connection mounted at target through fusectl,
	// so every pending and future request fails with ENOTCONN instead of
	// hanging.
	Abort(target string) error
	// ConnectionID returns the fusectl connection number (the minor device
	// number) of the FUSE mount at target.
	ConnectionID(target string) (uint32, error)
	// AbortConnection aborts the FUSE connection with that number.
	AbortConnection(id uint32) error
}

// New returns the Interface of this platform, using mount-utils for mount
// table checks.
func New() Interface { return newMounter(mount.New("")) }
