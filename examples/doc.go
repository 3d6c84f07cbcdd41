// Package examples holds no code: it is the home of the test that keeps the
// YAML examples in this directory valid. Every object is decoded strictly
// with client-go's scheme, every PV of the s3.rekey.dev driver is parsed with
// csidriver/volumecontext (with its Secret), claims, volumes and opt-ins are
// cross-checked, and every kustomization lists every file. See README.md.
package examples
