package keys

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// maxWireSize bounds what Decode reads: the largest valid keys plus framing.
const maxWireSize = MaxAccessKeyIDLen + MaxSecretLen + MaxTokenLen + 1024

// wire is the JSON form of Keys used on pipes and files between rekey
// processes. It is the only place the secret is marshalled.
type wire struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
	Expiration      string `json:"expiration,omitempty"`
}

// Encode writes k to w in the wire format Decode reads.
func Encode(w io.Writer, k Keys) error {
	v := wire{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}
	if !k.Expiration.IsZero() {
		v.Expiration = k.Expiration.UTC().Format(time.RFC3339)
	}
	// This is the one place keys are marshalled, onto a pipe or a 0600 file.
	if err := json.NewEncoder(w).Encode(v); err != nil { //nolint:gosec // G117: see above
		return fmt.Errorf("keys: encode: %w", err)
	}
	return nil
}

// Decode reads one set of keys written by Encode and validates it. Unknown
// fields are refused.
func Decode(r io.Reader) (Keys, error) {
	dec := json.NewDecoder(io.LimitReader(r, maxWireSize))
	dec.DisallowUnknownFields()
	var v wire
	if err := dec.Decode(&v); err != nil {
		// json errors can quote input; report only the kind of failure.
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return Keys{}, fmt.Errorf("keys: decode: malformed JSON at offset %d", syn.Offset)
		case errors.As(err, &typ):
			return Keys{}, fmt.Errorf("keys: decode: field %q has the wrong type", typ.Field)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return Keys{}, errors.New("keys: decode: no keys received")
		default:
			return Keys{}, errors.New("keys: decode: unexpected content (unknown field or trailing data)")
		}
	}
	k := Keys{AccessKeyID: v.AccessKeyID, SecretAccessKey: v.SecretAccessKey, SessionToken: v.SessionToken}
	if v.Expiration != "" {
		t, err := time.Parse(time.RFC3339, v.Expiration)
		if err != nil {
			return Keys{}, ErrBadExpiration
		}
		k.Expiration = t
	}
	if err := k.Validate(); err != nil {
		return Keys{}, err
	}
	return k, nil
}

// ReadFile reads keys from a file that only its owner may read and removes
// it, so the secret does not stay on disk. A file readable by group or others
// is refused (and still removed).
func ReadFile(path string) (Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return Keys{}, fmt.Errorf("keys: open key file: %w", err)
	}
	defer f.Close()
	defer os.Remove(path)
	st, err := f.Stat()
	if err != nil {
		return Keys{}, fmt.Errorf("keys: stat key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Keys{}, fmt.Errorf("keys: key file %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Keys{}, fmt.Errorf("keys: key file %s has mode %#o, want 0600 or stricter", path, st.Mode().Perm())
	}
	return Decode(f)
}
