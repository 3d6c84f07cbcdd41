package s3fs

import (
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/internal/fusebdi"
)

// maxWrite is the largest FUSE write request.
const maxWrite = 1 << 20

// MountOptions returns the go-fuse options to serve f: kernel entry,
// attribute and negative timeouts from StatCacheTTL, MaxWrite 1 MiB, FsName
// "rekey:<bucket>", Name "rekey" (type fuse.rekey), DirectMount (no
// fusermount binary needed), default_permissions (the kernel checks the
// modes from Umask/UID/GID), no xattrs, a read-only mount if ReadOnly,
// and node ids chosen by f (ExternalNodeID; see LookupNode).
//
// A server that starts a new kernel connection (INIT) with these options
// must call ResetNodes first; Mount and Serve do.
func (f *FS) MountOptions(allowOther bool) *fs.Options {
	ttl := f.opts.StatCacheTTL
	entry, attr, negative := ttl, ttl, ttl
	o := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:  allowOther,
			MaxWrite:    maxWrite,
			FsName:      "rekey:" + f.opts.Bucket,
			Name:        "rekey",
			DirectMount: true,
			// Extended attributes are kept in object metadata (xattrs.go).
			// HANDLE_KILLPRIV_V2: the kernel does not ask for
			// security.capability before every write (a round trip per
			// write); there are no capabilities to drop here.
			DisableXAttrs:     false,
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
			MaxBackground:     64,
			// A 1 MiB read reply plus its header does not fit a pipe of
			// the default pipe-max-size (1 MiB), so every splice attempt
			// would fail, log a line and fall back to a copy anyway.
			DisableSplice: true,
			Options:       []string{"default_permissions"},
			// A signal to the application never fails its call with
			// EINTR (Go's preemption signals would, at random): every
			// request runs to its answer, bounded by RequestTimeout.
			DisableInterrupts: true,
		},
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &negative,
		NullPermissions: true, // modes come from Umask and MountUmask
		UID:             f.opts.UID,
		GID:             f.opts.GID,
		// Node ids are the inode numbers of nodeid.go, the same in
		// every process (LookupNode resolves those of an earlier one).
		ExternalNodeID: true,
		RootStableAttr: &fs.StableAttr{Ino: fuse.FUSE_ROOT_ID},
	}
	if f.opts.ReaddirPlusAuto {
		o.ExtraCapabilities = fuse.CAP_READDIRPLUS_AUTO
	}
	if f.opts.ReadOnly {
		o.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	}
	return o
}

// Mount mounts f at dir itself (mount(2), so it needs CAP_SYS_ADMIN but no
// fusermount binary) and serves it until the returned server is unmounted.
func Mount(dir string, f *FS, allowOther bool) (*fuse.Server, error) {
	if err := f.ResetNodes(); err != nil {
		return nil, fmt.Errorf("s3fs: mount %s: %w", dir, err)
	}
	srv, err := fs.Mount(dir, f.Root(), f.MountOptions(allowOther))
	if err != nil {
		return nil, fmt.Errorf("s3fs: mount %s: %w", dir, err)
	}
	if err := SetKernelReadahead(dir, KernelReadaheadKB); err != nil {
		f.log.V(1).Info("kernel read-ahead left at its default", "error", err.Error())
	}
	return srv, nil
}

// KernelReadaheadKB is the kernel read-ahead Mount asks for: the size of
// one FUSE read request (maxWrite). The kernel caps the read-ahead a FUSE
// server can negotiate at 128 KiB, so a sequential reader would otherwise
// wait for one 128 KiB round trip after another; with 1 MiB the kernel
// asks for the next MiB while the reader copies the last one.
const KernelReadaheadKB = maxWrite >> 10

// SetKernelReadahead sets the kernel read-ahead of the FUSE mount at
// mountpoint; see fusebdi.SetReadahead.
func SetKernelReadahead(mountpoint string, kb int) error {
	if err := fusebdi.SetReadahead(mountpoint, kb); err != nil {
		return fmt.Errorf("s3fs: %w", err)
	}
	return nil
}

// Serve serves f on fd, a /dev/fuse descriptor that a parent opened and
// mount(2)ed (with fd=N in its mount data) before handing it over. It uses
// go-fuse's magic mountpoint "/dev/fd/N", which skips mounting and reads
// the INIT request from the fd, so the mount options that matter
// (allow_other, default_permissions, ro, max_read) are the ones the parent
// passed to mount(2); allowOther is kept for symmetry with Mount. The
// returned server cannot Unmount (it does not know the mountpoint): the
// parent unmounts, after which Wait returns.
//
// Unlike Mount, Serve cannot run go-fuse's poll hack, so a process that
// serves the mount must not open files in it (the Go runtime registers
// them with epoll, and the FUSE poll request that triggers can deadlock
// its own server) until someone called DisablePoll on the mountpoint.
func Serve(fd int, f *FS, allowOther bool) (*fuse.Server, error) {
	if fd <= 0 {
		return nil, fmt.Errorf("s3fs: serve: invalid fuse fd %d", fd)
	}
	if err := f.ResetNodes(); err != nil {
		return nil, fmt.Errorf("s3fs: serve fd %d: %w", fd, err)
	}
	return serveFD(fd, f, f.MountOptions(allowOther))
}

// serveFD serves f on fd, mounted by someone else, with opts.
func serveFD(fd int, f *FS, opts *fs.Options) (*fuse.Server, error) {
	// With DirectMount set go-fuse would try mount(2) on /dev/fd/N first.
	opts.DirectMount = false
	opts.DirectMountStrict = false
	opts.DirectMountFlags = 0
	srv, err := fs.Mount(fmt.Sprintf("/dev/fd/%d", fd), f.Root(), opts)
	if err != nil {
		return nil, fmt.Errorf("s3fs: serve fd %d: %w", fd, err)
	}
	return srv, nil
}

// pollHackName is the name go-fuse answers for itself to switch off FUSE
// poll (see fuse.Server.WaitMount).
const pollHackName = ".go-fuse-epoll-hack"

// DisablePoll makes the kernel stop sending poll requests to the FUSE
// server of mountpoint, as go-fuse does itself after Mount. Call it, from
// any process, once the server runs, if the serving process may open files
// in its own mount (Serve cannot, it does not know the mountpoint).
func DisablePoll(mountpoint string) error {
	// Raw syscalls: os.Open would register the fd with epoll, the very
	// poll request this avoids.
	fd, err := syscall.Open(mountpoint+"/"+pollHackName, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("s3fs: disable poll on %s: %w", mountpoint, err)
	}
	defer syscall.Close(fd)
	// Any answer will do: the server says ENOSYS, and the kernel remembers.
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}, 0)
	return nil
}
