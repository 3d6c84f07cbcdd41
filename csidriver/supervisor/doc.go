// Package supervisor runs one rekey-fuse process per FUSE mount, apart from
// the CSI driver so that the two do not share fate.
//
// The driver mounts /dev/fuse at the target and sends the open descriptor
// (SCM_RIGHTS) and the initial keys over a node-local unix socket (see
// Client and Serve); the Supervisor starts rekey-fuse on that descriptor
// with the keys on a pipe, waits until it serves, and records the mount's
// Spec — never its keys — in a state directory.
//
// Fate sharing:
//   - the driver dies: nothing happens to the mounts; the restarted driver
//     calls List to learn them again.
//   - the supervisor dies: every rekey-fuse runs in its own session
//     (setsid), so it keeps serving and is re-parented to the container's
//     init (see Reap, meant for PID 1); the next supervisor reads the state
//     directory, finds each server by PID (checking its command line), asks
//     its control socket for Status, and watches it again through a pidfd.
//   - a rekey-fuse dies while mounted: the supervisor aborts the FUSE
//     connection through fusectl, so applications get ENOTCONN instead of
//     hanging, and reports a "died" Event (the driver turns it into a
//     FUSEServerDied Warning on the pod).
package supervisor
