// Package fuseserver runs one rekey FUSE server: it serves a bucket (or a
// prefix in it) as a filesystem through package s3fs, signs every S3
// request with keys held by package s3client, and accepts new keys over the
// control API of package control, which a rotation.Manager validates and
// swaps while I/O continues.
//
// It starts in one of two ways: on a /dev/fuse descriptor that its parent
// already opened and mounted (the CSI driver's way), or standalone, mounting
// a directory itself. Initial keys arrive on an inherited pipe or in a 0600
// file that is removed once read; never in argv or the environment.
package fuseserver
