// Package certs is the webhook's built-in certificate authority for clusters
// without cert-manager. It keeps a self-signed CA and a serving certificate in
// a Secret, writes the serving pair into the webhook server's certificate
// directory (where controller-runtime's certwatcher reloads it), and, on the
// leader only, patches the MutatingWebhookConfiguration's caBundle and
// rotates both certificates well before they expire.
//
// The alternative is the kustomize component manifests/components/cert-manager,
// a cert-manager Issuer and Certificate.
package certs
