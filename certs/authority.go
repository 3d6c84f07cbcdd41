package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Config says where the authority keeps its certificates and whom they serve.
type Config struct {
	// Namespace and SecretName locate the Secret holding CA and serving pair.
	Namespace  string
	SecretName string
	// ServiceName is the webhook Service; the serving certificate names
	// <service>, <service>.<namespace>, <service>.<namespace>.svc and
	// <service>.<namespace>.svc.cluster.local.
	ServiceName string
	// ExtraSANs are further DNS names or IP addresses for the certificate.
	ExtraSANs []string
	// WebhookConfigName is the MutatingWebhookConfiguration whose caBundle
	// the leader keeps current.
	WebhookConfigName string
	// CertDir receives tls.crt and tls.key for the webhook server.
	CertDir string
	// CAValidity and CertValidity are the certificates' lifetimes. Each is
	// replaced when less than a third of its lifetime is left.
	CAValidity   time.Duration
	CertValidity time.Duration
	// CheckInterval is how often the leader checks expiry and the caBundle,
	// and how often every replica re-reads the Secret.
	CheckInterval time.Duration
}

// DefaultConfig returns lifetimes suitable for production: a CA for ten years
// and serving certificates for one, checked every minute.
func DefaultConfig() Config {
	return Config{ //nolint:gosec // names of a Secret, not credentials
		SecretName:        "rekey-webhook-tls",
		ServiceName:       "rekey-webhook",
		WebhookConfigName: "rekey-webhook",
		CAValidity:        10 * 365 * 24 * time.Hour,
		CertValidity:      365 * 24 * time.Hour,
		CheckInterval:     time.Minute,
	}
}

func (c Config) validate() error {
	for name, v := range map[string]string{
		"namespace": c.Namespace, "secret name": c.SecretName, "service name": c.ServiceName,
		"webhook configuration name": c.WebhookConfigName, "cert dir": c.CertDir,
	} {
		if v == "" {
			return fmt.Errorf("certs: %s must not be empty", name)
		}
	}
	if c.CAValidity < c.CertValidity || c.CertValidity <= 0 || c.CheckInterval <= 0 {
		return fmt.Errorf("certs: need 0 < cert validity (%s) <= CA validity (%s) and a positive check interval",
			c.CertValidity, c.CAValidity)
	}
	return nil
}

// sans answers the serving certificate's subject alternative names.
func (c Config) sans() []string {
	svc, ns := c.ServiceName, c.Namespace
	return append([]string{
		svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", svc + "." + ns, svc,
	}, c.ExtraSANs...)
}

// Authority keeps the webhook's self-signed certificates. Bootstrap must run
// before the webhook server starts; Add registers the rest with the manager.
type Authority struct {
	cfg Config
	// client must not be cached: the webhook has no business watching Secrets.
	client client.Client
	log    logr.Logger
	now    func() time.Time
}

// New returns an Authority that talks to the API server through c, which
// must read directly from the API server (not through an informer cache).
func New(cfg Config, c client.Client, log logr.Logger) (*Authority, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Authority{cfg: cfg, client: c, log: log, now: time.Now}, nil
}

// Bootstrap makes sure the Secret holds a usable serving pair, creating or
// repairing it if needed (every replica may do so; the API server's
// optimistic concurrency picks one), and writes the pair into CertDir.
func (a *Authority) Bootstrap(ctx context.Context) error {
	data, err := a.ensure(ctx, false)
	if err != nil {
		return err
	}
	_, err = a.writeFiles(data)
	return err
}

// Add registers the leader-only rotator and the every-replica file syncer.
func (a *Authority) Add(mgr manager.Manager) error {
	if err := mgr.Add(&rotator{a: a}); err != nil {
		return fmt.Errorf("certs: add rotator: %w", err)
	}
	if err := mgr.Add(manager.RunnableFunc(a.sync)); err != nil {
		return fmt.Errorf("certs: add syncer: %w", err)
	}
	return nil
}

// Rotate renews whatever is due, patches the caBundle and writes CertDir. The
// leader calls it every CheckInterval; tests call it directly.
func (a *Authority) Rotate(ctx context.Context) error {
	data, err := a.ensure(ctx, true)
	if err != nil {
		return err
	}
	if err := a.patchCABundle(ctx, data[KeyCACert]); err != nil {
		return err
	}
	_, err = a.writeFiles(data)
	return err
}

// ensure reads the Secret and, when it is missing, unusable or (if rotate)
// due, writes renewed data. A new caBundle is patched in before the Secret
// changes, so no replica serves a certificate the API server does not trust.
func (a *Authority) ensure(ctx context.Context, rotate bool) (map[string][]byte, error) {
	key := types.NamespacedName{Namespace: a.cfg.Namespace, Name: a.cfg.SecretName}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("certs: ensure secret %s: %w", key, ctx.Err())
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		var sec corev1.Secret
		err := a.client.Get(ctx, key, &sec)
		switch {
		case apierrors.IsNotFound(err):
			data, _, err := a.renew(nil, true)
			if err != nil {
				return nil, err
			}
			if rotate {
				if err := a.patchCABundle(ctx, data[KeyCACert]); err != nil {
					return nil, err
				}
			}
			sec = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "rekey-webhook"}},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}
			err = a.client.Create(ctx, &sec)
			if apierrors.IsAlreadyExists(err) && attempt < 5 {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("certs: create secret %s: %w", key, err)
			}
			a.log.Info("Created webhook certificates", "secret", key.String())
			return data, nil
		case err != nil:
			if attempt < 5 && !errors.Is(err, context.Canceled) {
				continue
			}
			return nil, fmt.Errorf("certs: read secret %s: %w", key, err)
		}
		data, changed, err := a.renew(sec.Data, rotate)
		if err != nil {
			return nil, err
		}
		if !changed {
			return sec.Data, nil
		}
		if rotate {
			if err := a.patchCABundle(ctx, data[KeyCACert]); err != nil {
				return nil, err
			}
		}
		sec.Data = data
		err = a.client.Update(ctx, &sec)
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("certs: update secret %s: %w", key, err)
		}
		a.log.Info("Renewed webhook certificates", "secret", key.String(), "notAfter", a.notAfter(data))
		return data, nil
	}
}

func (a *Authority) notAfter(data map[string][]byte) string {
	if certs, err := parseCerts(data[KeyTLSCert]); err == nil {
		return certs[0].NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

// renew answers data with whatever is missing, broken or (if rotate) due
// replaced, and whether anything changed. Without rotate it only repairs
// what cannot serve at all.
func (a *Authority) renew(data map[string][]byte, rotate bool) (map[string][]byte, bool, error) {
	now := a.now()
	sans := a.cfg.sans()
	ca, caErr := parsePair(data[KeyCACert], data[KeyCAKey])
	srv, srvErr := parsePair(data[KeyTLSCert], data[KeyTLSKey])
	usable := caErr == nil && srvErr == nil && now.Before(srv.cert.NotAfter) &&
		covers(srv.cert, sans) && srv.cert.CheckSignatureFrom(ca.cert) == nil
	if !rotate && usable {
		return data, false, nil
	}
	oldCAs, _ := parseCerts(data[KeyCACert])
	rotateCA := caErr != nil || !fresh(ca.cert, now, a.cfg.CAValidity)
	if rotateCA {
		var err error
		if ca, err = newCA(a.cfg.ServiceName+"-ca", now, a.cfg.CAValidity); err != nil {
			return nil, false, err
		}
	}
	out := map[string][]byte{KeyCAKey: data[KeyCAKey], KeyTLSCert: data[KeyTLSCert], KeyTLSKey: data[KeyTLSKey]}
	if rotateCA {
		k, err := encodeKey(ca.key)
		if err != nil {
			return nil, false, err
		}
		out[KeyCAKey] = k
	}
	out[KeyCACert] = bundle(ca.cert, oldCAs, now)
	if rotateCA || !usable || !fresh(srv.cert, now, a.cfg.CertValidity) {
		s, err := newServing(ca, sans, now, a.cfg.CertValidity)
		if err != nil {
			return nil, false, err
		}
		k, err := encodeKey(s.key)
		if err != nil {
			return nil, false, err
		}
		out[KeyTLSCert], out[KeyTLSKey] = encodeCert(s.cert), k
	}
	changed := false
	for _, k := range []string{KeyCACert, KeyCAKey, KeyTLSCert, KeyTLSKey} {
		if !bytes.Equal(out[k], data[k]) {
			changed = true
		}
	}
	return out, changed, nil
}

// patchCABundle sets caBundle on every webhook of the configuration.
func (a *Authority) patchCABundle(ctx context.Context, caBundle []byte) error {
	for attempt := 0; ; attempt++ {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		err := a.client.Get(ctx, types.NamespacedName{Name: a.cfg.WebhookConfigName}, &mwc)
		if apierrors.IsNotFound(err) {
			a.log.Info("MutatingWebhookConfiguration not found; caBundle not patched", "name", a.cfg.WebhookConfigName)
			return nil
		}
		if err != nil {
			return fmt.Errorf("certs: read MutatingWebhookConfiguration %s: %w", a.cfg.WebhookConfigName, err)
		}
		changed := false
		for i := range mwc.Webhooks {
			if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, caBundle) {
				mwc.Webhooks[i].ClientConfig.CABundle = caBundle
				changed = true
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
			return fmt.Errorf("certs: patch caBundle of %s: %w", a.cfg.WebhookConfigName, err)
		}
		a.log.Info("Patched caBundle", "mutatingWebhookConfiguration", a.cfg.WebhookConfigName)
		return nil
	}
}

// writeFiles writes the serving pair into CertDir when it differs from what
// is there, key first, each by an atomic rename; certwatcher reloads it.
func (a *Authority) writeFiles(data map[string][]byte) (bool, error) {
	if err := os.MkdirAll(a.cfg.CertDir, 0o700); err != nil {
		return false, fmt.Errorf("certs: %w", err)
	}
	crtPath := filepath.Join(a.cfg.CertDir, KeyTLSCert)
	cur, err := os.ReadFile(crtPath) //nolint:gosec // CertDir is the operator's flag
	if err == nil && bytes.Equal(cur, data[KeyTLSCert]) {
		return false, nil
	}
	for _, k := range []string{KeyTLSKey, KeyTLSCert} {
		if err := writeAtomic(filepath.Join(a.cfg.CertDir, k), data[k]); err != nil {
			return false, err
		}
	}
	a.log.Info("Wrote serving certificate", "certDir", a.cfg.CertDir, "notAfter", a.notAfter(data))
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

// sync copies the Secret's serving pair into CertDir every CheckInterval.
func (a *Authority) sync(ctx context.Context) error {
	t := time.NewTicker(a.cfg.CheckInterval)
	defer t.Stop()
	key := types.NamespacedName{Namespace: a.cfg.Namespace, Name: a.cfg.SecretName}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var sec corev1.Secret
		if err := a.client.Get(ctx, key, &sec); err != nil {
			a.log.Error(err, "Cannot read webhook certificates", "secret", key.String())
			continue
		}
		if _, err := parsePair(sec.Data[KeyTLSCert], sec.Data[KeyTLSKey]); err != nil {
			a.log.Error(err, "Secret holds no usable serving pair", "secret", key.String())
			continue
		}
		if _, err := a.writeFiles(sec.Data); err != nil {
			a.log.Error(err, "Cannot write serving certificate")
		}
	}
}

// rotator runs Rotate on the elected leader only.
type rotator struct{ a *Authority }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (r *rotator) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable.
func (r *rotator) Start(ctx context.Context) error {
	for {
		wait := r.a.cfg.CheckInterval
		if err := r.a.Rotate(ctx); err != nil && ctx.Err() == nil {
			r.a.log.Error(err, "Certificate rotation failed; retrying")
			wait = min(wait, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
