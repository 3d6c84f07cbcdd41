package keys_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"rekey.dev/rekey/internal/keys"
)

func clusterKey(b byte) []byte { return bytes.Repeat([]byte{b}, keys.MinClusterKeyLen) }

// TestKeyedFingerprintEqualForEqualKeys: two parties with the same keys and
// the same cluster key agree (the node plugin on the keys in use, kubectl
// rekey on the Secret's content); the expiry is no part of it.
func TestKeyedFingerprintEqualForEqualKeys(t *testing.T) {
	a := keys.Keys{AccessKeyID: "AKID", SecretAccessKey: secret, SessionToken: "tok"}
	b := keys.Keys{AccessKeyID: strings.Clone("AKID"), SecretAccessKey: strings.Clone(secret), SessionToken: "tok"}
	b.Expiration = b.Expiration.AddDate(1, 0, 0)
	fa, err := a.KeyedFingerprint(clusterKey(1))
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := b.KeyedFingerprint(clusterKey(1))
	if fa != fb || !strings.HasPrefix(fa, "AKID:") || len(fa) != len("AKID:")+16 {
		t.Fatalf("fingerprints %q and %q, want equal, AKID:<16 hex>", fa, fb)
	}
	for name, other := range map[string]keys.Keys{
		"secret": {AccessKeyID: "AKID", SecretAccessKey: secret + "x", SessionToken: "tok"},
		"token":  {AccessKeyID: "AKID", SecretAccessKey: secret},
		"id":     {AccessKeyID: "AKIE", SecretAccessKey: secret, SessionToken: "tok"},
	} {
		if f, _ := other.KeyedFingerprint(clusterKey(1)); f == fa {
			t.Errorf("a different %s gives the same fingerprint %s", name, f)
		}
	}
}

// TestKeyedFingerprintNeedsClusterKey: a reader of Events who tries the
// candidate secret without the cluster key (the unkeyed fingerprint, a
// plain SHA-256, HMACs under guessable keys) never reproduces the value,
// another cluster's key gives another value, and no key is refused.
func TestKeyedFingerprintNeedsClusterKey(t *testing.T) {
	k := keys.Keys{AccessKeyID: "AKID", SecretAccessKey: "password1"}
	fp, err := k.KeyedFingerprint(clusterKey(7))
	if err != nil {
		t.Fatal(err)
	}
	hexOf := func(b []byte) string { return "AKID:" + hex.EncodeToString(b[:8]) }
	plain := sha256.Sum256([]byte("password1"))
	guesses := []string{k.Fingerprint(), hexOf(plain[:])}
	for _, guess := range [][]byte{nil, {}, make([]byte, 32), []byte("AKID"), []byte("rekey")} {
		m := hmac.New(sha256.New, guess)
		for _, s := range []string{"rekey-keyed-fingerprint-v1", k.AccessKeyID, k.SecretAccessKey, k.SessionToken} {
			m.Write([]byte(s))
			m.Write([]byte{0})
		}
		guesses = append(guesses, hexOf(m.Sum(nil)))
	}
	for _, g := range guesses {
		if g == fp {
			t.Fatalf("fingerprint %s reproduced without the cluster key", fp)
		}
	}
	if other, _ := k.KeyedFingerprint(clusterKey(8)); other == fp {
		t.Errorf("two cluster keys give the same fingerprint %s", fp)
	}
	for _, short := range [][]byte{nil, make([]byte, keys.MinClusterKeyLen-1)} {
		if _, err := k.KeyedFingerprint(short); !errors.Is(err, keys.ErrShortClusterKey) {
			t.Errorf("cluster key of %d bytes: err = %v, want ErrShortClusterKey", len(short), err)
		}
	}
}

// TestKeyedFingerprintV1Fixture pins the format: a node plugin and a
// kubectl-rekey of different versions must compute the same value (the
// value was computed independently with Python's hmac module).
func TestKeyedFingerprintV1Fixture(t *testing.T) {
	k := keys.Keys{AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", SessionToken: "tok"}
	got, err := k.KeyedFingerprint([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "AKIAEXAMPLE:d6763a81e847d3a5"
	if got != want {
		t.Fatalf("KeyedFingerprint = %s, want %s", got, want)
	}
}
