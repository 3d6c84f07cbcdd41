package fuseserver

import (
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	"github.com/hanwen/go-fuse/v2/fuse"

	"rekey.dev/rekey/fuseserver/mountopts"
	"rekey.dev/rekey/fuseserver/s3fs"
	"rekey.dev/rekey/fuseserver/session"
)

// ErrNoResend means the kernel cannot resend the requests a dead server
// left unanswered (Linux before 6.9): a resumed server would leave the
// processes that sent them waiting forever, so the connection must be
// aborted instead.
var ErrNoResend = errors.New("fuseserver: the kernel does not support FUSE_NOTIFY_RESEND; the connection cannot be resumed")

// serve starts serving fsys: on a new mount, on a descriptor the parent
// mounted, or on a descriptor whose connection an earlier server left.
func serve(cfg Config, fsys *s3fs.FS, opts mountopts.Options) (*fuse.Server, error) {
	var srv *fuse.Server
	var err error
	switch {
	case cfg.Resume:
		st, rerr := session.Read(cfg.SessionFile)
		if rerr != nil {
			return nil, fmt.Errorf("fuseserver: resume: %w", rerr)
		}
		if !st.Init.SupportsResend() {
			return nil, ErrNoResend
		}
		// A new epoch, recorded before the first handle is issued, so no
		// later server reuses it.
		st.Epoch++
		if err := session.Write(cfg.SessionFile, st); err != nil {
			return nil, fmt.Errorf("fuseserver: resume: %w", err)
		}
		srv, err = s3fs.Resume(cfg.FuseFD, fsys, opts.AllowOther, &st.Init, st.Epoch)
	case cfg.FuseFD >= 0:
		srv, err = s3fs.Serve(cfg.FuseFD, fsys, opts.AllowOther)
	default:
		srv, err = s3fs.Mount(cfg.Mountpoint, fsys, opts.AllowOther)
	}
	if err != nil {
		return nil, fmt.Errorf("fuseserver: mount: %w", err)
	}
	return srv, nil
}

// afterServing records the INIT settings of a new connection, or asks the
// kernel to resend what the previous server of a resumed one left
// unanswered.
func afterServing(cfg Config, srv *fuse.Server, log logr.Logger) error {
	if cfg.Resume {
		if st := srv.NotifyResend(); !st.Ok() {
			return fmt.Errorf("fuseserver: resume: NOTIFY_RESEND: %w", syscallErr(st))
		}
		log.Info("resumed the FUSE connection; the kernel resends unanswered requests")
		return nil
	}
	if cfg.SessionFile == "" {
		return nil
	}
	st := session.State{Init: *srv.InitState()}
	if err := session.Write(cfg.SessionFile, st); err != nil {
		return fmt.Errorf("fuseserver: %w", err)
	}
	if !st.Init.SupportsResend() {
		log.Info("the kernel cannot resend requests (Linux < 6.9): if this server dies, its mount is aborted, not resumed")
	}
	return nil
}

func syscallErr(st fuse.Status) error {
	if st == fuse.ENOSYS {
		return ErrNoResend
	}
	return fmt.Errorf("status %d", int32(st))
}
