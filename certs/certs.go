package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Secret data keys, as the rotator writes them; tls.crt and tls.key follow
// the kubernetes.io/tls layout.
const (
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
	KeyCACert  = "ca.crt"
	KeyCAKey   = "ca.key"
)

// Config says where the certificates live and whom they serve.
type Config struct {
	// Namespace and SecretName locate the Secret holding CA and serving pair.
	Namespace  string
	SecretName string
	// ServiceName is the webhook Service; the serving certificate names
	// <service>.<namespace>.svc, <service>.<namespace>.svc.cluster.local,
	// <service>.<namespace> and <service>.
	ServiceName string
	// ExtraSANs are further DNS names for the certificate (the rotator
	// issues DNS names only: IP addresses are refused).
	ExtraSANs []string
	// WebhookConfigName is the MutatingWebhookConfiguration whose caBundle
	// is kept current.
	WebhookConfigName string
	// CertDir receives tls.crt and tls.key for the webhook server.
	CertDir string
	// CAValidity and CertValidity are the certificates' lifetimes. Both are
	// renewed when less than a third of CertValidity is left.
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
	for _, san := range c.ExtraSANs {
		if net.ParseIP(san) != nil {
			return fmt.Errorf("certs: extra SAN %q is an IP address; the self-signed mode issues DNS names only (use a name such as localhost, or cert-manager)", san)
		}
		if errs := validation.IsDNS1123Subdomain(san); len(errs) > 0 {
			return fmt.Errorf("certs: extra SAN %q is not a DNS name: %s", san, errs[0])
		}
	}
	return nil
}

// sans answers the serving certificate's DNS names, the one the API server
// asks for (<service>.<namespace>.svc) first.
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
	// client must read directly from the API server (not through a cache).
	client client.Client
	log    logr.Logger
	now    func() time.Time
	// rot is the configured rotator; Add hands it to the manager.
	rot *rotator.CertRotator
}

// New returns an Authority that talks to the API server through c, which
// must read directly from the API server (not through an informer cache).
// leaderElected says whether the manager elects a leader: the rotator runs
// on the leader only.
func New(cfg Config, c client.Client, leaderElected bool, log logr.Logger) (*Authority, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sans := cfg.sans()
	rot := &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.SecretName},
		CertDir:        cfg.CertDir,
		CAName:         cfg.ServiceName + "-ca",
		CAOrganization: "rekey",
		DNSName:        sans[0],
		ExtraDNSNames:  sans[1:],
		IsReady:        make(chan struct{}),
		ExtKeyUsages:   &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// No Webhooks: the caBundle is ours to merge (trust.go).
		RequireLeaderElection:  leaderElected,
		CaCertDuration:         cfg.CAValidity,
		ServerCertDuration:     cfg.CertValidity,
		RotationCheckFrequency: cfg.CheckInterval,
		LookaheadInterval:      cfg.CertValidity / 3,
		ControllerName:         "rekey-cert-rotator",
	}
	return &Authority{cfg: cfg, client: c, log: log, now: time.Now, rot: rot}, nil
}

// Bootstrap makes sure the Secret holds a serving pair this configuration
// can use, issuing one with the rotator's generators if not (every replica
// may; the API server's optimistic concurrency picks one), trusts a new CA
// in the caBundle before storing it, and writes the pair into CertDir.
func (a *Authority) Bootstrap(ctx context.Context) error {
	key := a.rot.SecretKey
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("certs: bootstrap secret %s: %w", key, ctx.Err())
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		var sec corev1.Secret
		err := a.client.Get(ctx, key, &sec)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			if attempt < 5 && !errors.Is(err, context.Canceled) {
				continue
			}
			return fmt.Errorf("certs: read secret %s: %w", key, err)
		}
		if exists && a.usable(sec.Data) {
			_, err := a.writeFiles(sec.Data)
			return err
		}
		data, err := a.issue()
		if err != nil {
			return err
		}
		if err := a.trust(ctx, data[KeyCACert]); err != nil {
			return err
		}
		if exists {
			sec.Data = data
			err = a.client.Update(ctx, &sec)
		} else {
			sec = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "rekey-webhook"}},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}
			err = a.client.Create(ctx, &sec)
		}
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("certs: store secret %s: %w", key, err)
		}
		a.log.Info("Issued webhook certificates", "secret", key.String())
		_, err = a.writeFiles(data)
		return err
	}
}

// usable says whether data holds a CA the rotator can sign with and a
// serving pair it signed that covers every configured name now.
func (a *Authority) usable(data map[string][]byte) bool {
	if ok, _ := rotator.ValidCert(data[KeyCACert], data[KeyTLSCert], data[KeyTLSKey], a.rot.DNSName, nil, a.now()); !ok {
		return false
	}
	if b, _ := pem.Decode(data[KeyCAKey]); b == nil {
		return false
	} else if _, err := x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
		return false // e.g. an ECDSA CA of an earlier rekey: the rotator signs with RSA keys only
	}
	leaf, err := firstCert(data[KeyTLSCert])
	if err != nil {
		return false
	}
	for _, name := range a.cfg.sans() {
		if !slices.Contains(leaf.DNSNames, name) {
			return false
		}
	}
	return true
}

// issue creates a CA and a serving pair with the rotator's generators.
func (a *Authority) issue() (map[string][]byte, error) {
	now := a.now()
	ca, err := a.rot.CreateCACert(now.Add(-time.Hour), now.Add(a.cfg.CAValidity))
	if err != nil {
		return nil, fmt.Errorf("certs: create CA: %w", err)
	}
	crt, key, err := a.rot.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(a.cfg.CertValidity))
	if err != nil {
		return nil, fmt.Errorf("certs: create serving certificate: %w", err)
	}
	return map[string][]byte{KeyCACert: ca.CertPEM, KeyCAKey: ca.KeyPEM, KeyTLSCert: crt, KeyTLSKey: key}, nil
}

// Add registers the rotator and the caBundle keeper (leader only) and the
// file syncer (every replica).
func (a *Authority) Add(mgr manager.Manager) error {
	if err := rotator.AddRotator(detachingManager{mgr}, a.rot); err != nil {
		return fmt.Errorf("certs: add rotator: %w", err)
	}
	if err := mgr.Add(&bundleKeeper{a: a, leader: a.rot.RequireLeaderElection}); err != nil {
		return fmt.Errorf("certs: add caBundle keeper: %w", err)
	}
	if err := mgr.Add(manager.RunnableFunc(a.sync)); err != nil {
		return fmt.Errorf("certs: add syncer: %w", err)
	}
	return nil
}

// detachingManager adds the rotator's own runnable so that stopping the
// manager does not wait for it: the rotator reads its Secret with a
// background context, which can block past shutdown when the cache stops
// before that read's informer synced.
type detachingManager struct{ manager.Manager }

// Add implements manager.Manager.
func (m detachingManager) Add(r manager.Runnable) error {
	if cr, ok := r.(*rotator.CertRotator); ok {
		return m.Manager.Add(&detached{cr: cr})
	}
	return m.Manager.Add(r)
}

type detached struct{ cr *rotator.CertRotator }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (d *detached) NeedLeaderElection() bool { return d.cr.NeedLeaderElection() }

// Start implements manager.Runnable.
func (d *detached) Start(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- d.cr.Start(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	}
}

func firstCert(b []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// parseCerts answers every CERTIFICATE block of b, at least one.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("certs: no CERTIFICATE block")
	}
	return out, nil
}
