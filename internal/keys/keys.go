// Package keys is the one representation of an S3 key pair inside rekey:
// access key ID, secret key, optional session token and expiry. It parses
// them from Secret data (every alias of the contract), checks them against
// an allowlist, fingerprints them, and carries them over pipes and files.
//
// A Keys value never prints its secret: String, GoString, Format and
// MarshalJSON all redact, so a stray log call or %v cannot leak it.
package keys

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"rekey.dev/rekey/internal/contract"
)

// Limits of the allowlist. Real access key IDs are 16-128 characters, secrets
// up to a few hundred; STS session tokens can run to several kilobytes.
const (
	MaxAccessKeyIDLen = 256
	MaxSecretLen      = 1024
	MaxTokenLen       = 16 << 10
)

// Errors returned by Validate and FromSecret. They never contain secret values.
var (
	ErrMissingAccessKeyID = errors.New("keys: access key ID is empty")
	ErrMissingSecret      = errors.New("keys: secret access key is empty")
	ErrTooLong            = errors.New("keys: value too long")
	ErrBadCharacter       = errors.New("keys: value contains a character outside printable ASCII")
	ErrBadExpiration      = errors.New("keys: expiration is not an RFC 3339 time")
	ErrAmbiguous          = errors.New("keys: secret holds more than one key naming convention")
)

// Keys is one set of S3 credentials.
type Keys struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string    // empty for permanent keys
	Expiration      time.Time // zero for keys that do not expire
}

// Validate checks the keys against the allowlist: both halves present,
// printable ASCII without spaces, bounded length. The error names the field,
// never its value.
func (k Keys) Validate() error {
	if k.AccessKeyID == "" {
		return ErrMissingAccessKeyID
	}
	if k.SecretAccessKey == "" {
		return ErrMissingSecret
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"access key ID", k.AccessKeyID, MaxAccessKeyIDLen},
		{"secret access key", k.SecretAccessKey, MaxSecretLen},
		{"session token", k.SessionToken, MaxTokenLen},
	} {
		if len(f.v) > f.max {
			return fmt.Errorf("%w: %s is %d bytes, at most %d allowed", ErrTooLong, f.name, len(f.v), f.max)
		}
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c <= ' ' || c > '~' {
				return fmt.Errorf("%w: %s, position %d", ErrBadCharacter, f.name, i)
			}
		}
	}
	return nil
}

// Fingerprint identifies the keys without revealing them: the access key ID
// followed by 16 hex digits of a SHA-256 over all fields. Two parties holding
// the same keys compute the same fingerprint.
func (k Keys) Fingerprint() string {
	if k.AccessKeyID == "" && k.SecretAccessKey == "" {
		return ""
	}
	h := sha256.New()
	for _, s := range []string{"rekey-fingerprint-v1", k.AccessKeyID, k.SecretAccessKey, k.SessionToken} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	return k.AccessKeyID + ":" + hex.EncodeToString(sum[:8])
}

// MinClusterKeyLen is the shortest cluster key KeyedFingerprint accepts.
const MinClusterKeyLen = 32

// ErrShortClusterKey is returned by KeyedFingerprint for a missing or short key.
var ErrShortClusterKey = errors.New("keys: fingerprint cluster key is shorter than 32 bytes")

// KeyedFingerprint identifies the keys to readers of Events and status
// objects: the access key ID followed by 16 hex digits of an HMAC-SHA256,
// keyed with the per-cluster fingerprint key, over all fields. Unlike
// Fingerprint, nobody without the cluster key can test guesses of a secret
// against it offline; whoever holds the cluster key and the same keys
// computes the same value.
func (k Keys) KeyedFingerprint(clusterKey []byte) (string, error) {
	if len(clusterKey) < MinClusterKeyLen {
		return "", ErrShortClusterKey
	}
	if k.AccessKeyID == "" && k.SecretAccessKey == "" {
		return "", nil
	}
	h := hmac.New(sha256.New, clusterKey)
	for _, s := range []string{"rekey-keyed-fingerprint-v1", k.AccessKeyID, k.SecretAccessKey, k.SessionToken} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	return k.AccessKeyID + ":" + hex.EncodeToString(sum[:8]), nil
}

// Equal reports whether both sets of keys sign identically and expire at the same time.
func (k Keys) Equal(o Keys) bool {
	return k.AccessKeyID == o.AccessKeyID && k.SecretAccessKey == o.SecretAccessKey &&
		k.SessionToken == o.SessionToken && k.Expiration.Equal(o.Expiration)
}

// IsZero reports whether no keys are set.
func (k Keys) IsZero() bool {
	return k.AccessKeyID == "" && k.SecretAccessKey == "" && k.SessionToken == ""
}

// String prints the fingerprint only.
func (k Keys) String() string { return "keys(" + k.Fingerprint() + ")" }

// GoString prints the fingerprint only, so %#v is safe too.
func (k Keys) GoString() string { return k.String() }

// Format makes every fmt verb print the redacted String.
func (k Keys) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// MarshalJSON redacts: structured loggers that marshal values see no secret.
func (k Keys) MarshalJSON() ([]byte, error) {
	return []byte(`{"fingerprint":"` + k.Fingerprint() + `"}`), nil
}

// FromSecret reads keys from Secret data, accepting each naming convention
// of the contract: akId/akSecret, accessKeyID/secretAccessKey, and
// AccessKeyId/AccessKeySecret/SecurityToken/Expiration. Other entries (for
// example csi-s3's endpoint and region) are ignored here. Exactly one
// convention must be present.
func FromSecret(data map[string]string) (Keys, error) {
	type convention struct{ id, secret string }
	conventions := []convention{
		{contract.SecretKeyAkID, contract.SecretKeyAkSecret},
		{contract.SecretKeyAccessKeyID, contract.SecretKeySecretAccessKey},
		{contract.SecretKeySTSAccessKeyID, contract.SecretKeySTSSecret},
	}
	var found []convention
	for _, c := range conventions {
		_, hasID := data[c.id]
		_, hasSecret := data[c.secret]
		if hasID || hasSecret {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return Keys{}, fmt.Errorf("%w (expected %s/%s, %s/%s or %s/%s)", ErrMissingAccessKeyID,
			contract.SecretKeyAkID, contract.SecretKeyAkSecret,
			contract.SecretKeyAccessKeyID, contract.SecretKeySecretAccessKey,
			contract.SecretKeySTSAccessKeyID, contract.SecretKeySTSSecret)
	case 1:
	default:
		return Keys{}, fmt.Errorf("%w: %s and %s", ErrAmbiguous, found[0].id, found[1].id)
	}
	c := found[0]
	k := Keys{AccessKeyID: trimNewline(data[c.id]), SecretAccessKey: trimNewline(data[c.secret])}
	if k.AccessKeyID == "" {
		return Keys{}, fmt.Errorf("%w (secret key %q)", ErrMissingAccessKeyID, c.id)
	}
	if k.SecretAccessKey == "" {
		return Keys{}, fmt.Errorf("%w (secret key %q)", ErrMissingSecret, c.secret)
	}
	if c.id == contract.SecretKeySTSAccessKeyID {
		k.SessionToken = trimNewline(data[contract.SecretKeySTSToken])
		if exp := trimNewline(data[contract.SecretKeySTSExpiration]); exp != "" {
			t, err := time.Parse(time.RFC3339, exp)
			if err != nil {
				return Keys{}, fmt.Errorf("%w (secret key %q)", ErrBadExpiration, contract.SecretKeySTSExpiration)
			}
			k.Expiration = t
		}
	}
	if err := k.Validate(); err != nil {
		return Keys{}, err
	}
	return k, nil
}

// trimNewline drops one trailing newline: `kubectl create secret
// --from-file` of a file written by echo keeps it, and it is never part of a key.
func trimNewline(s string) string {
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
		if len(s) > 0 && s[len(s)-1] == '\r' {
			s = s[:len(s)-1]
		}
	}
	return s
}
