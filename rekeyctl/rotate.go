package rekeyctl

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// keyEntries are the Secret entries rotate may set: the key names of the contract.
var keyEntries = []string{
	contract.SecretKeyAkID, contract.SecretKeyAkSecret,
	contract.SecretKeyAccessKeyID, contract.SecretKeySecretAccessKey,
	contract.SecretKeySTSAccessKeyID, contract.SecretKeySTSSecret, contract.SecretKeySTSToken, contract.SecretKeySTSExpiration,
}

// maxKeyFile bounds a --from-file file (the largest valid entry is a 16 KiB session token).
const maxKeyFile = 32 << 10

// ParseFromFile parses a --from-file ENTRY=PATH and reads the file. The
// entry must be one of the contract's key names; the value never goes
// through argv.
func ParseFromFile(arg string) (entry string, value []byte, err error) {
	entry, path, ok := strings.Cut(arg, "=")
	if !ok || path == "" {
		return "", nil, fmt.Errorf("%w: --from-file %q is not ENTRY=PATH", ErrUsage, arg)
	}
	if !slices.Contains(keyEntries, entry) {
		return "", nil, fmt.Errorf("%w: --from-file entry %q is not a key name rekey reads (%s)", ErrUsage, entry, strings.Join(keyEntries, ", "))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, fmt.Errorf("--from-file %s: %w", entry, err)
	}
	if fi.Size() > maxKeyFile {
		return "", nil, fmt.Errorf("--from-file %s: %s is %d bytes, more than a key can be", entry, path, fi.Size())
	}
	b, err := os.ReadFile(path) //nolint:gosec // the user names the file
	if err != nil {
		return "", nil, fmt.Errorf("--from-file %s: %w", entry, err)
	}
	return entry, b, nil
}

// RotateOptions configure Rotate.
type RotateOptions struct {
	WaitOptions
	// Entries are the Secret entries to set (ParseFromFile).
	Entries map[string][]byte
}

// Rotate writes new keys into the Secret (after checking them against the
// allowlist: a Secret the driver could not read is never written), then
// waits like Wait. It prints the fingerprints of the old and the new keys;
// revoking the old key at the provider is left to the caller, once Rotate
// returned without error.
func (l *Lister) Rotate(ctx context.Context, o RotateOptions) (Progress, error) {
	ns, name, err := SplitRef(o.Secret)
	if err != nil {
		return Progress{}, err
	}
	if len(o.Entries) == 0 {
		return Progress{}, fmt.Errorf("%w: rotate needs --from-file ENTRY=PATH for the new keys", ErrUsage)
	}
	key, err := l.clusterKey(ctx)
	if err != nil {
		return Progress{}, err
	}
	var s corev1.Secret
	if err := l.C.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return Progress{}, fmt.Errorf("%w: %s (create it first; rotate changes an existing Secret)", ErrSecretNotFound, o.Secret)
		}
		return Progress{}, explain(err, "read Secret "+o.Secret, ns)
	}
	oldKeys, oldErr := keys.FromSecret(stringData(s.Data))
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for e, v := range o.Entries {
		s.Data[e] = v
	}
	newKeys, err := keys.FromSecret(stringData(s.Data))
	if err != nil {
		return Progress{}, fmt.Errorf("the Secret would not hold usable keys, not written: %w", err)
	}
	newFP, err := newKeys.KeyedFingerprint(key)
	if err != nil {
		return Progress{}, err
	}
	oldFP := "none"
	if oldErr == nil {
		if oldFP, err = oldKeys.KeyedFingerprint(key); err != nil {
			return Progress{}, err
		}
	}
	if oldErr == nil && oldKeys.Equal(newKeys) {
		fmt.Fprintf(o.Out, "Secret %s already holds keys %s\n", o.Secret, newFP)
	} else {
		if err := l.C.Update(ctx, &s); err != nil {
			if apierrors.IsConflict(err) {
				return Progress{}, fmt.Errorf("the Secret %s changed while rotating; run rotate again: %w", o.Secret, err)
			}
			return Progress{}, explain(err, "update Secret "+o.Secret, ns)
		}
		fmt.Fprintf(o.Out, "Secret %s updated: keys %s -> %s\n", o.Secret, oldFP, newFP)
	}
	p, err := l.Wait(ctx, o.WaitOptions)
	if err == nil && oldErr == nil && !oldKeys.Equal(newKeys) {
		fmt.Fprintf(o.Out, "revoke the old key %s at your provider now\n", oldKeys.AccessKeyID)
	}
	return p, err
}

func stringData(d map[string][]byte) map[string]string {
	out := make(map[string]string, len(d))
	for k, v := range d {
		out[k] = string(v)
	}
	return out
}
