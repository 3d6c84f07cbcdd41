// Package fusebdi tunes the kernel side of a FUSE mount through its
// backing device info (BDI) in sysfs. The FUSE protocol caps the read-ahead a
// server can negotiate at 128 KiB; whoever mounts (rekey-fuse standalone, the
// CSI driver in descriptor mode) raises it after the server answered INIT,
// because the kernel lowers the BDI's read-ahead to the INIT reply's value.
package fusebdi

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// SetReadahead sets the kernel read-ahead of the mount at mountpoint to kb
// KiB (its BDI's read_ahead_kb). It needs root and a writable /sys.
func SetReadahead(mountpoint string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("read-ahead: %w", err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(kb)), 0o600); err != nil { // sysfs keeps its own mode
		return fmt.Errorf("read-ahead: %w", err)
	}
	return nil
}
