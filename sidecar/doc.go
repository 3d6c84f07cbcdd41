// Package sidecar is the per-pod credential agent of rekey. It learns each
// volume's keys from a projected Secret (watched with fsnotify the way
// kubelet updates it) or from a projected service-account token exchanged
// at STS (Alibaba AssumeRoleWithOIDC for RRSA, AssumeRoleWithWebIdentity for
// AWS, MinIO and Ceph), refreshes temporary keys before they expire, and
// pushes every change to the FUSE servers of its pod over their control
// sockets in the rekey-sockets emptyDir.
//
// The parts, one file each:
//
//   - watcher.go: a directory watcher (fsnotify, debounce, slow poll) and the
//     projected-Secret reader that only ever sees complete key sets.
//   - sts.go: the two STS exchanges, as plain HTTP calls.
//   - refresh.go: when to refresh temporary keys, with jittered backoff.
//   - client.go: one FUSE server's control socket.
//   - push.go: socket discovery and delivery of the newest keys to each
//     server, with re-push after a server restart.
//   - health.go: readiness and Prometheus metrics.
//   - run.go: Run, which wires all of it for one pod.
//
// Secrets never appear in logs, errors, metrics, the environment or argv:
// keys are named by their fingerprint (internal/keys), and STS tokens are
// read from files at the moment they are sent.
package sidecar
