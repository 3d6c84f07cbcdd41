// Package webhook is rekey's mutating admission webhook for Pods. It injects
// the credential-rotation sidecar into pods that opted in and use a volume of
// the s3.rekey.dev CSI driver, and it never blocks a pod it has no business
// with: anything it cannot do becomes an admission warning.
//
// The decision and the mutation live in Injector.Default, a pure function of
// the pod and what the manager's cache knows about namespaces, PVCs and PVs.
// The admission plumbing (decode, patch, warnings, panic safety) lives in the
// handler built by NewHandler.
package webhook
