// Package csidriver is rekey's CSI plugin: the Identity and Node services
// of the node plugin, the Controller service of rekey-controller (dynamic
// provisioning: a prefix or a bucket per volume), a gRPC interceptor
// that logs every call with its secrets stripped, the pre-mount checks that
// turn S3 errors into messages users can act on, and the Events posted on
// pods. Mounting goes through mounter.Interface; FUSE servers run under a
// supervisor reached through a Runner, so the driver and the servers do
// not share fate.
package csidriver
