// Package certs wires the webhook's built-in certificates for clusters
// without cert-manager around open-policy-agent/cert-controller's rotator.
//
// The rotator (leader only) keeps a self-signed CA and a serving certificate
// in a Secret and renews each before it expires. This package adds what the
// rotator does not do for rekey:
//   - Bootstrap issues a first pair with the rotator's own generators before
//     the webhook server starts, on any replica (the rotator only runs on the
//     elected leader, and the server cannot start without files);
//   - the caBundle of the MutatingWebhookConfiguration keeps every CA that
//     is still valid (the rotator would replace it with the new CA alone),
//     so a replica still serving a leaf of the previous CA stays trusted;
//   - every replica copies the Secret's serving pair into the webhook
//     server's certificate directory (where controller-runtime's certwatcher
//     reloads it), and only once the caBundle trusts that pair.
//
// The alternative is cert-manager: manifests/components/cert-manager or the
// chart's webhook.certMode=cert-manager.
package certs
