// Package clusterkey keeps the per-cluster key of keyed fingerprints
// (keys.Keys.KeyedFingerprint) in a Secret of rekey's namespace. The node
// plugins create it on first start (whichever is first wins; the others
// read it), and kubectl-rekey reads it to fingerprint a Secret's content
// the same way. Whoever can read this Secret can test guesses of a secret
// against the fingerprints in Events and status objects, so only rekey's
// node plugin and cluster administrators may read it.
package clusterkey

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// Size is the length of a key this package creates.
const Size = 32

// ErrInvalid reports a Secret without a usable key.
var ErrInvalid = errors.New("clusterkey: the fingerprint key Secret holds no key of at least 32 bytes")

// Get reads the key from the Secret contract.FingerprintKeySecret in namespace.
func Get(ctx context.Context, cs kubernetes.Interface, namespace string) ([]byte, error) {
	s, err := cs.CoreV1().Secrets(namespace).Get(ctx, contract.FingerprintKeySecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("clusterkey: read Secret %s/%s: %w", namespace, contract.FingerprintKeySecret, err)
	}
	return fromSecret(s)
}

// Ensure reads the key, creating the Secret with a random key when it does
// not exist yet. Concurrent callers (one per node) all end with the same key.
func Ensure(ctx context.Context, cs kubernetes.Interface, namespace string) ([]byte, error) {
	key, err := Get(ctx, cs, namespace)
	if err == nil || !apierrors.IsNotFound(err) {
		return key, err
	}
	key = make([]byte, Size)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("clusterkey: %w", err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.FingerprintKeySecret, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "rekey"}},
		Type:      corev1.SecretTypeOpaque,
		Data:      map[string][]byte{contract.FingerprintKeyEntry: key},
		Immutable: ptrTrue(),
	}
	if _, err := cs.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) { // another node was first
			return Get(ctx, cs, namespace)
		}
		return nil, fmt.Errorf("clusterkey: create Secret %s/%s: %w", namespace, contract.FingerprintKeySecret, err)
	}
	return key, nil
}

func fromSecret(s *corev1.Secret) ([]byte, error) {
	key := s.Data[contract.FingerprintKeyEntry]
	if len(key) < keys.MinClusterKeyLen {
		return nil, fmt.Errorf("%w (Secret %s/%s, entry %q)", ErrInvalid, s.Namespace, s.Name, contract.FingerprintKeyEntry)
	}
	return key, nil
}

func ptrTrue() *bool { t := true; return &t }
