package keycustody

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Create makes an empty custody file: a memfd of fixed size, sealed
// against shrinking and growing, closed on exec (pass it on explicitly).
func Create(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("keycustody: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := f.Truncate(fileSize); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("keycustody: size: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("keycustody: seal: %w", err)
	}
	return f, nil
}
