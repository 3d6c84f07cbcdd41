// Package fuseresume tests, on real mounts, that a FUSE connection
// outlives its server process: the test mounts /dev/fuse itself and
// keeps the descriptor, serves the mount from a child process, kills that
// child with SIGKILL while a read waits in it, and lets a second child
// take the connection over with the settings the first one negotiated at
// INIT (fuse.MountOptions.Resume in the patched go-fuse of
// third_party/go-fuse). The second child asks the kernel to send the
// unanswered requests again (Server.NotifyResend) and resolves node IDs
// and file handles it never issued (fs.NodeLookupNoder, fs.NodeReopener,
// fs.Options.FileHandleEpoch). See docs/resume.md.
//
// The package has only tests; the file system they serve is a small
// loopback of a temporary directory whose node IDs are the inode numbers
// of the backing files, so that both children agree on them.
package fuseresume
