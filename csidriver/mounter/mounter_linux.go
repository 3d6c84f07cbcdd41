//go:build linux

package mounter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

var errNotMounted = errors.New("mounter: not in the mount table")

// FusectlDir is where the fusectl filesystem lists FUSE connections.
const FusectlDir = "/sys/fs/fuse/connections"

type linuxMounter struct {
	utils mount.Interface
}

func newMounter(m mount.Interface) Interface { return &linuxMounter{utils: m} }

func (m *linuxMounter) IsMountPoint(target string) (bool, bool, error) {
	// The mount table, not stat: stat hangs on a FUSE mount whose server
	// is stuck, or dead while someone still holds its descriptor.
	if _, err := m.connectionIDFromMountinfo(target); err != nil {
		if errors.Is(err, errNotMounted) {
			return false, false, nil
		}
		return false, false, err
	}
	errc := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		errc <- unix.Stat(target, &st)
	}()
	select {
	case err := <-errc:
		if err != nil && mount.IsCorruptedMnt(err) {
			return true, true, nil
		}
		return true, false, nil
	case <-time.After(2 * time.Second):
		return true, true, nil
	}
}

func (m *linuxMounter) MountFUSE(target string, o FUSEOptions) (*os.File, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mounter: open /dev/fuse: %w", err)
	}
	f := os.NewFile(uintptr(fd), "/dev/fuse")
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions", fd)
	if o.MaxRead > 0 {
		data += ",max_read=" + strconv.Itoa(o.MaxRead)
	}
	if o.AllowOther {
		data += ",allow_other"
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if o.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	fstype := "fuse"
	if o.Subtype != "" {
		fstype += "." + o.Subtype
	}
	if err := unix.Mount(o.Source, target, fstype, flags, data); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("mounter: mount %s: %w", target, err)
	}
	return f, nil
}

func (m *linuxMounter) Unmount(target string) error {
	mounted, corrupted, err := m.IsMountPoint(target)
	if err != nil {
		return err
	}
	if !mounted {
		return nil
	}
	if !corrupted {
		if err := unix.Unmount(target, 0); err == nil {
			return nil
		}
	}
	// Dead server or busy mount: abort the connection (pending requests
	// fail instead of hanging) and detach the mount from the tree.
	_ = m.Abort(target)
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("mounter: lazy unmount %s: %w", target, err)
	}
	return nil
}

// ConnectionID reads the mount table: a stat of a fresh FUSE mount would
// block until its server answers INIT.
func (m *linuxMounter) ConnectionID(target string) (uint32, error) {
	return m.connectionIDFromMountinfo(target)
}

func (m *linuxMounter) Abort(target string) error {
	id, err := m.connectionIDFromMountinfo(target)
	if err != nil {
		return err
	}
	return m.AbortConnection(id)
}

// connectionIDFromMountinfo reads the device of target's mount from
// /proc/self/mountinfo, which works when stat would hang or fail on a dead
// server.
func (m *linuxMounter) connectionIDFromMountinfo(target string) (uint32, error) {
	infos, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return 0, fmt.Errorf("mounter: %w", err)
	}
	clean := filepath.Clean(target)
	for i := len(infos) - 1; i >= 0; i-- {
		if infos[i].MountPoint == clean {
			return uint32(infos[i].Minor), nil
		}
	}
	return 0, fmt.Errorf("%w: %s", errNotMounted, target)
}

func (m *linuxMounter) AbortConnection(id uint32) error {
	if err := ensureFusectl(); err != nil {
		return err
	}
	p := filepath.Join(FusectlDir, strconv.FormatUint(uint64(id), 10), "abort")
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // the connection is already gone
		}
		return fmt.Errorf("mounter: abort FUSE connection %d: %w", id, err)
	}
	return nil
}

// ensureFusectl mounts fusectl when the node image or host has not.
func ensureFusectl() error {
	if _, err := os.Stat(filepath.Join(FusectlDir, ".")); err != nil {
		return fmt.Errorf("mounter: fusectl: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(FusectlDir, &st); err == nil && st.Type == 0x65735543 { // FUSECTL_SUPER_MAGIC
		return nil
	}
	if err := unix.Mount("fusectl", FusectlDir, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mounter: mount fusectl on %s: %w", FusectlDir, err)
	}
	return nil
}
