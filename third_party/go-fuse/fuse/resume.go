// Copyright 2026 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"fmt"
)

// InitState is what a server and the kernel agreed on at INIT: the
// kernel's request and the server's reply. It is everything a later
// server process needs to parse the requests of the same connection
// as the first one did, so it can take the connection over without a
// new INIT (MountOptions.Resume). All fields are exported, so it can
// be stored as JSON.
type InitState struct {
	// Kernel is the INIT request of the kernel: its protocol
	// version and the capabilities it offers, among them
	// CAP_HAS_RESEND.
	Kernel InitIn

	// Reply is the INIT reply of the server: the protocol minor
	// version in use, the negotiated capabilities, MaxWrite,
	// MaxPages and so on.
	Reply InitOut
}

// InitState returns the INIT settings of the server, to be passed as
// MountOptions.Resume to a server that takes the connection over. It
// is valid once NewServer has returned.
func (ms *Server) InitState() *InitState {
	return &InitState{Kernel: ms.kernelSettings, Reply: ms.initOut}
}

// NegotiatedFlags returns the capabilities the server replied with
// (CAP_* bits).
func (s *InitState) NegotiatedFlags() uint64 {
	return s.Reply.Flags64()
}

// SupportsResend reports whether the kernel of s supports
// NOTIFY_RESEND (Linux 6.9 and later).
func (s *InitState) SupportsResend() bool {
	return s.Kernel.Flags64()&CAP_HAS_RESEND != 0
}

// check validates saved settings for a server that resumes a
// connection on mountPoint.
func (s *InitState) check(mountPoint string) error {
	if parseFuseFd(mountPoint) < 0 {
		return fmt.Errorf("resume: mountpoint %q is not of the form /dev/fd/N", mountPoint)
	}
	if s.Kernel.Major != _FUSE_KERNEL_VERSION || s.Reply.Major != _FUSE_KERNEL_VERSION {
		return fmt.Errorf("resume: protocol major version %d (reply %d), want %d", s.Kernel.Major, s.Reply.Major, _FUSE_KERNEL_VERSION)
	}
	if s.Kernel.Minor < _MINIMUM_MINOR_VERSION {
		return fmt.Errorf("resume: kernel protocol minor version %d, want at least %d", s.Kernel.Minor, _MINIMUM_MINOR_VERSION)
	}
	if s.Reply.Minor > s.Kernel.Minor || s.Reply.Minor > _OUR_MINOR_VERSION {
		return fmt.Errorf("resume: negotiated minor version %d, want at most %d (kernel %d)", s.Reply.Minor, _OUR_MINOR_VERSION, s.Kernel.Minor)
	}
	if s.Reply.MaxWrite == 0 {
		return fmt.Errorf("resume: MaxWrite is 0")
	}
	return nil
}

// resume installs the settings an earlier server negotiated at INIT,
// as handleInit does after reading INIT.
func (ms *Server) resume(s *InitState) {
	ms.kernelSettings = s.Kernel
	ms.initOut = s.Reply
	ms.negotiatedFlags = s.Reply.Flags64()
	if ms.kernelSettings.Minor >= 13 {
		ms.setSplice()
	}
	ms.fileSystem.Init(ms)
}

// SupportsResend reports whether the kernel supports NotifyResend.
func (ms *Server) SupportsResend() bool {
	return ms.kernelSettings.Flags64()&CAP_HAS_RESEND != 0
}

// NotifyResend asks the kernel to queue again every request it handed
// to a server of this connection and that was not answered, for
// example because that server was killed while it was processing the
// request. The requests are read again with the FUSE_UNIQUE_RESEND
// bit (1<<63) set in InHeader.Unique, so a request the earlier server
// carried out before it died is carried out again. Returns ENOSYS if
// the kernel does not support it (before Linux 6.9, see
// SupportsResend); requests that server read are then never
// answered, and the processes waiting on them wait until the
// connection is aborted.
func (ms *Server) NotifyResend() Status {
	if !ms.SupportsResend() {
		return ENOSYS
	}
	return ms.notifyWrite(newNotifyRequest(_OP_NOTIFY_RESEND))
}
