// Package s3client builds the S3 client a FUSE server signs every request
// with. Its credentials live in a Provider that can be replaced atomically:
// every request signed after SetKeys returns uses the new keys, and a request
// that was signed with the old keys and fails with an authentication error
// because they were revoked meanwhile is retried at once with the new ones,
// so applications never see a rotation. Validate checks candidate keys with
// one cheap signed request before they are used.
package s3client
