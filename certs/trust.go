package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// mergeBundle answers the caBundle that trusts ca (first) and every other
// certificate of current that is still valid at now: a replica serving a
// leaf of the previous CA stays trusted while the new CA comes into use.
// An unreadable current bundle is replaced by ca alone.
func mergeBundle(current, ca []byte, now time.Time) ([]byte, error) {
	caCerts, err := parseCerts(ca)
	if err != nil {
		return nil, err
	}
	out := bytes.Buffer{}
	seen := map[string]bool{}
	add := func(c *x509.Certificate) {
		if seen[string(c.Raw)] || now.After(c.NotAfter) {
			return
		}
		seen[string(c.Raw)] = true
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	add(caCerts[0])
	if old, err := parseCerts(current); err == nil {
		for _, c := range old {
			add(c)
		}
	}
	return out.Bytes(), nil
}

// trust adds ca to the caBundle of every webhook of the configuration.
func (a *Authority) trust(ctx context.Context, ca []byte) error {
	name := a.cfg.WebhookConfigName
	for attempt := 0; ; attempt++ {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		err := a.client.Get(ctx, types.NamespacedName{Name: name}, &mwc)
		if apierrors.IsNotFound(err) {
			a.log.Info("MutatingWebhookConfiguration not found; caBundle not patched", "name", name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("certs: read MutatingWebhookConfiguration %s: %w", name, err)
		}
		changed := false
		for i := range mwc.Webhooks {
			cc := &mwc.Webhooks[i].ClientConfig
			merged, err := mergeBundle(cc.CABundle, ca, a.now())
			if err != nil {
				return err
			}
			if !bytes.Equal(merged, cc.CABundle) {
				cc.CABundle, changed = merged, true
			}
		}
		if !changed {
			return nil
		}
		err = a.client.Update(ctx, &mwc)
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("certs: patch caBundle of %s: %w", name, err)
		}
		a.log.Info("Patched caBundle", "mutatingWebhookConfiguration", name)
		return nil
	}
}

// trusted says whether the caBundle of every webhook of the configuration
// trusts leaf for the Service's name now (true when there is no
// configuration to trust it).
func (a *Authority) trusted(ctx context.Context, leaf *x509.Certificate) (bool, error) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	err := a.client.Get(ctx, types.NamespacedName{Name: a.cfg.WebhookConfigName}, &mwc)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("certs: read MutatingWebhookConfiguration %s: %w", a.cfg.WebhookConfigName, err)
	}
	for _, wh := range mwc.Webhooks {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(wh.ClientConfig.CABundle)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: a.rot.DNSName, CurrentTime: a.now()}); err != nil {
			return false, nil //nolint:nilerr // not trusted yet is an answer, not a failure
		}
	}
	return true, nil
}

// bundleKeeper adds the Secret's current CA to the caBundle every
// CheckInterval, on the leader (the rotator renews the Secret there).
type bundleKeeper struct {
	a      *Authority
	leader bool
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (k *bundleKeeper) NeedLeaderElection() bool { return k.leader }

// Start implements manager.Runnable.
func (k *bundleKeeper) Start(ctx context.Context) error {
	for {
		var sec corev1.Secret
		err := k.a.client.Get(ctx, k.a.rot.SecretKey, &sec)
		if err == nil {
			err = k.a.trust(ctx, sec.Data[KeyCACert])
		}
		if err != nil && ctx.Err() == nil {
			k.a.log.Error(err, "Cannot keep the caBundle current; retrying")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(k.a.cfg.CheckInterval):
		}
	}
}
