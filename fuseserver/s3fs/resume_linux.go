package s3fs

import (
	"fmt"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Resume serves f on fd, a /dev/fuse descriptor whose connection an
// earlier server process initialised and then left (it died or handed the
// mount over), with the INIT settings that server saved. It does not wait
// for an INIT (the kernel sends none). Requests the earlier server read but
// did not answer stay with the kernel until the caller asks for them with
// the returned server's NotifyResend, once f can resolve the node ids and
// file handles the earlier server gave out. epoch must differ from that of
// every earlier server of the connection (the first one has 0): the file
// handles this server issues carry it.
func Resume(fd int, f *FS, allowOther bool, init *fuse.InitState, epoch uint32) (*fuse.Server, error) {
	if fd <= 0 {
		return nil, fmt.Errorf("s3fs: resume: invalid fuse fd %d", fd)
	}
	if init == nil {
		return nil, fmt.Errorf("s3fs: resume: no INIT settings")
	}
	opts := f.MountOptions(allowOther)
	opts.Resume = init
	opts.FileHandleEpoch = epoch
	return serveFD(fd, f, opts)
}
