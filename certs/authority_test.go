package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

type fixture struct {
	a      *Authority
	client client.Client
	now    time.Time
}

func newFixture(t *testing.T, objs ...client.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "rekey-webhook"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.rekey.dev"}, {Name: "b.rekey.dev"}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(objs, mwc)...).Build()
	cfg := DefaultConfig()
	cfg.Namespace = "rekey-system"
	cfg.CertDir = t.TempDir()
	cfg.ExtraSANs = []string{"127.0.0.1"}
	cfg.CAValidity = 90 * time.Hour
	cfg.CertValidity = 9 * time.Hour
	a, err := New(cfg, c, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{a: a, client: c, now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	a.now = func() time.Time { return f.now }
	return f
}

func (f *fixture) secret(t *testing.T) map[string][]byte {
	t.Helper()
	var s corev1.Secret
	if err := f.client.Get(context.Background(), types.NamespacedName{Namespace: "rekey-system", Name: "rekey-webhook-tls"}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// verify checks that the files in CertDir form a pair that the caBundle of
// every webhook trusts for the service name, at the fixture's time.
func (f *fixture) verify(t *testing.T) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(f.a.cfg.CertDir, KeyTLSCert), filepath.Join(f.a.cfg.CertDir, KeyTLSKey))
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
		for _, name := range []string{"rekey-webhook.rekey-system.svc", "127.0.0.1"} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: f.now}); err != nil {
				t.Fatalf("webhook %s: verify %s: %v", wh.Name, name, err)
			}
		}
	}
	return leaf
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.verify(t)
	caBefore := f.secret(t)[KeyCACert]

	// Nothing is due: nothing changes.
	f.now = f.now.Add(5 * time.Hour)
	if err := f.a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.verify(t); !got.Equal(first) {
		t.Fatal("serving certificate renewed before it was due")
	}

	// Less than a third of the serving certificate's life left: new leaf, same CA.
	f.now = f.now.Add(2 * time.Hour)
	if err := f.a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	second := f.verify(t)
	if second.Equal(first) {
		t.Fatal("serving certificate not renewed")
	}
	if string(f.secret(t)[KeyCACert]) != string(caBefore) {
		t.Fatal("CA changed with the serving certificate")
	}

	// CA due: new CA, and the old one stays in the bundle while it is valid.
	f.now = f.now.Add(55 * time.Hour)
	if err := f.a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	bundle, err := parseCerts(f.secret(t)[KeyCACert])
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle) != 2 {
		t.Fatalf("bundle holds %d CAs, want new and old", len(bundle))
	}
	// A replica still serving the previous leaf is trusted.
	roots := x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	if _, err := second.Verify(x509.VerifyOptions{Roots: roots, DNSName: "rekey-webhook.rekey-system.svc", CurrentTime: second.NotAfter.Add(-time.Minute)}); err != nil {
		t.Fatalf("previous leaf no longer trusted: %v", err)
	}

	// Once the old CA expires it leaves the bundle.
	f.now = f.now.Add(40 * time.Hour)
	if err := f.a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	if bundle, _ := parseCerts(f.secret(t)[KeyCACert]); len(bundle) != 1 {
		t.Fatalf("bundle holds %d CAs after the old one expired", len(bundle))
	}
}

func TestBootstrapRepairsAndKeeps(t *testing.T) {
	ctx := context.Background()
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "rekey-system", Name: "rekey-webhook-tls"},
		Data:       map[string][]byte{KeyTLSCert: []byte("garbage")},
	}
	f := newFixture(t, broken)
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	data := f.secret(t)
	if _, err := parsePair(data[KeyTLSCert], data[KeyTLSKey]); err != nil {
		t.Fatalf("not repaired: %v", err)
	}
	// A second replica bootstrapping later keeps the usable pair, even when
	// it is due for rotation (that is the leader's job).
	f.now = f.now.Add(8 * time.Hour)
	if err := os.RemoveAll(f.a.cfg.CertDir); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if string(f.secret(t)[KeyTLSCert]) != string(data[KeyTLSCert]) {
		t.Fatal("bootstrap replaced a usable pair")
	}
	if b, err := os.ReadFile(filepath.Join(f.a.cfg.CertDir, KeyTLSCert)); err != nil || string(b) != string(data[KeyTLSCert]) {
		t.Fatalf("cert dir not written: %v", err)
	}
}

func TestSANsChangeRenews(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if err := f.a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	f.a.cfg.ExtraSANs = []string{"127.0.0.1", "webhook.example"}
	if err := f.a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	leaf := f.verify(t)
	if err := leaf.VerifyHostname("webhook.example"); err != nil {
		t.Fatal(err)
	}
}
