//go:build !linux

package mounter

import (
	"os"

	"k8s.io/mount-utils"
)

type otherMounter struct{}

func newMounter(mount.Interface) Interface { return otherMounter{} }

func (otherMounter) IsMountPoint(string) (bool, bool, error)         { return false, false, ErrUnsupported }
func (otherMounter) MountFUSE(string, FUSEOptions) (*os.File, error) { return nil, ErrUnsupported }
func (otherMounter) Unmount(string) error                            { return ErrUnsupported }
func (otherMounter) Abort(string) error                              { return ErrUnsupported }
func (otherMounter) ConnectionID(string) (uint32, error)             { return 0, ErrUnsupported }
func (otherMounter) AbortConnection(uint32) error                    { return ErrUnsupported }
