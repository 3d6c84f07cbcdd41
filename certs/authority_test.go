package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"rekey.dev/rekey/internal/envtest"
)

// fixture is an Authority against a real API server, with the webhook
// configuration it keeps trusted.
type fixture struct {
	a      *Authority
	client client.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	restCfg, _ := envtest.Start(t)
	c, err := client.New(restCfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rekey-system"}}); err != nil {
		t.Fatal(err)
	}
	none := admissionregistrationv1.SideEffectClassNone
	hook := func(name string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://localhost:1/mutate")},
			// Matches nothing: the test only reads the caBundle.
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}},
		}
	}
	if err := c.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "rekey-webhook"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{hook("a.rekey.dev"), hook("b.rekey.dev")},
	}); err != nil {
		t.Fatal(err)
	}
	return &fixture{client: c, a: newAuthority(t, c, nil)}
}

func newAuthority(t *testing.T, c client.Client, extra []string) *Authority {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Namespace = "rekey-system"
	cfg.CertDir = t.TempDir()
	cfg.ExtraSANs = append([]string{"localhost"}, extra...)
	a, err := New(cfg, c, true, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (f *fixture) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := f.client.Get(context.Background(), types.NamespacedName{Namespace: "rekey-system", Name: "rekey-webhook-tls"}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// served answers the leaf in a's CertDir after checking that the caBundle
// of every webhook trusts it for the Service name and localhost.
func (f *fixture) served(t *testing.T, a *Authority) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(a.cfg.CertDir, KeyTLSCert), filepath.Join(a.cfg.CertDir, KeyTLSKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := f.client.Get(context.Background(), types.NamespacedName{Name: "rekey-webhook"}, &mwc); err != nil {
		t.Fatal(err)
	}
	for _, wh := range mwc.Webhooks {
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
			t.Fatalf("webhook %s has no caBundle", wh.Name)
		}
		for _, name := range []string{"rekey-webhook.rekey-system.svc", "localhost"} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
				t.Fatalf("webhook %s: verify %s: %v", wh.Name, name, err)
			}
		}
	}
	return leaf
}

func TestBootstrapIssuesAndKeeps(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.served(t, f.a)
	data := f.secret(t).Data
	for _, k := range []string{KeyCACert, KeyCAKey, KeyTLSCert, KeyTLSKey} {
		if len(data[k]) == 0 {
			t.Fatalf("secret lacks %s", k)
		}
	}
	// A second replica keeps the usable pair and serves it.
	other := newAuthority(t, f.client, nil)
	if err := other.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.served(t, other); !got.Equal(first) {
		t.Fatal("second bootstrap replaced a usable pair")
	}
	// A new name renews the pair, and the names stay covered.
	wider := newAuthority(t, f.client, []string{"webhook.example"})
	if err := wider.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	leaf := f.served(t, wider)
	if err := leaf.VerifyHostname("webhook.example"); err != nil {
		t.Fatal(err)
	}
}

// TestBootstrapReplacesForeignCA covers the upgrade from rekey's earlier
// ECDSA authority, whose key the rotator cannot sign with: a new CA is
// issued, and the old one stays trusted for replicas still serving its leaf.
func TestBootstrapReplacesForeignCA(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	oldCA, oldData := ecdsaPair(t)
	if err := f.client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "rekey-system", Name: "rekey-webhook-tls"},
		Type:       corev1.SecretTypeTLS, Data: oldData,
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.trust(ctx, oldData[KeyCACert]); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	f.served(t, f.a)
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := f.client.Get(ctx, types.NamespacedName{Name: "rekey-webhook"}, &mwc); err != nil {
		t.Fatal(err)
	}
	bundle, err := parseCerts(mwc.Webhooks[0].ClientConfig.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle) != 2 || !bundle[1].Equal(oldCA) {
		t.Fatalf("caBundle holds %d CAs, want the new one and the old one", len(bundle))
	}
}

// TestSyncWaitsForTrust: a replica serves a renewed pair only once the
// caBundle trusts it.
func TestSyncWaitsForTrust(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.served(t, f.a)
	// What the rotator does on the leader: a new CA and leaf in the Secret.
	renewed, err := f.a.issue()
	if err != nil {
		t.Fatal(err)
	}
	s := f.secret(t)
	s.Data = renewed
	if err := f.client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := f.a.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.served(t, f.a); !got.Equal(first) {
		t.Fatal("replica switched to a leaf the caBundle does not trust")
	}
	// The leader's caBundle keeper trusts the new CA (keeping the old one).
	if err := f.a.trust(ctx, renewed[KeyCACert]); err != nil {
		t.Fatal(err)
	}
	if err := f.a.syncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.served(t, f.a); got.Equal(first) {
		t.Fatal("replica did not switch to the trusted renewed leaf")
	}
	roots := x509.NewCertPool()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := f.client.Get(ctx, types.NamespacedName{Name: "rekey-webhook"}, &mwc); err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle)
	if _, err := first.Verify(x509.VerifyOptions{Roots: roots, DNSName: "rekey-webhook.rekey-system.svc"}); err != nil {
		t.Fatalf("previous leaf no longer trusted: %v", err)
	}
}

// ecdsaPair makes a CA and serving pair in the layout of rekey's earlier
// authority (ECDSA, PKCS#8).
func ecdsaPair(t *testing.T) (*x509.Certificate, map[string][]byte) {
	t.Helper()
	key := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	now := time.Now()
	caKey, caKeyPEM := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rekey-webhook-ca"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, leafKeyPEM := key()
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "rekey-webhook.rekey-system.svc"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(30 * time.Minute),
		DNSNames: []string{"rekey-webhook.rekey-system.svc", "localhost"}, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	return ca, map[string][]byte{KeyCACert: certPEM(caDER), KeyCAKey: caKeyPEM, KeyTLSCert: certPEM(leafDER), KeyTLSKey: leafKeyPEM}
}
