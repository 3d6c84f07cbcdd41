// Package rekeyctl is kubectl-rekey: it joins the pods that mount rekey
// volumes, the RekeyVolumeStatus objects the node plugins write and the
// current content of each volume's Secret, to answer "which mounts run
// the Secret's current keys?" (status) and to wait until all of them do
// (wait: the gate before revoking the old key).
//
// The Secret's content is compared by keyed fingerprint (the cluster's
// fingerprint key, Secret rekey-fingerprint-key in rekey's namespace), so
// whoever runs it needs to read that Secret, the Secrets in question,
// pods, PersistentVolumeClaims, PersistentVolumes and RekeyVolumeStatus.
package rekeyctl
