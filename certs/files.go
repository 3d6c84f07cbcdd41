package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// sync copies the Secret's serving pair into CertDir every CheckInterval,
// once the caBundle trusts it: after a rotation the replica keeps serving
// its previous pair until the API server would accept the new one.
func (a *Authority) sync(ctx context.Context) error {
	t := time.NewTicker(a.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := a.syncOnce(ctx); err != nil && ctx.Err() == nil {
			a.log.Error(err, "Cannot update the serving certificate", "secret", a.rot.SecretKey.String())
		}
	}
}

func (a *Authority) syncOnce(ctx context.Context) error {
	var sec corev1.Secret
	if err := a.client.Get(ctx, a.rot.SecretKey, &sec); err != nil {
		return fmt.Errorf("certs: read secret: %w", err)
	}
	if _, err := tls.X509KeyPair(sec.Data[KeyTLSCert], sec.Data[KeyTLSKey]); err != nil {
		return fmt.Errorf("certs: secret holds no usable serving pair: %w", err)
	}
	leaf, err := firstCert(sec.Data[KeyTLSCert])
	if err != nil {
		return err
	}
	ok, err := a.trusted(ctx, leaf)
	if err != nil || !ok {
		return err // not trusted yet: keep serving the current pair
	}
	_, err = a.writeFiles(sec.Data)
	return err
}

// writeFiles writes the serving pair into CertDir when it differs from what
// is there, key first, each by an atomic rename; certwatcher reloads it.
func (a *Authority) writeFiles(data map[string][]byte) (bool, error) {
	if err := os.MkdirAll(a.cfg.CertDir, 0o700); err != nil {
		return false, fmt.Errorf("certs: %w", err)
	}
	cur, err := os.ReadFile(filepath.Join(a.cfg.CertDir, KeyTLSCert)) //nolint:gosec // CertDir is the operator's flag
	if err == nil && bytes.Equal(cur, data[KeyTLSCert]) {
		return false, nil
	}
	for _, k := range []string{KeyTLSKey, KeyTLSCert} {
		if err := writeAtomic(filepath.Join(a.cfg.CertDir, k), data[k]); err != nil {
			return false, err
		}
	}
	notAfter := ""
	if leaf, err := firstCert(data[KeyTLSCert]); err == nil {
		notAfter = leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	a.log.Info("Wrote serving certificate", "certDir", a.cfg.CertDir, "notAfter", notAfter)
	return true, nil
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // fails harmlessly after the rename
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
