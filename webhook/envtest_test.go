package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"rekey.dev/rekey/certs"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/envtest"
	"rekey.dev/rekey/webhook"
)

const webhookNamespace = "rekey-system"

// warningRecorder collects the API server's warning headers.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// cluster is a kube-apiserver + etcd with the webhook configuration from
// manifests/webhook installed and the webhook running in-process with its
// self-signed certificates.
type cluster struct {
	client   client.Client
	warnings *warningRecorder
	addr     string
	certs    certs.Config
	// served records how long the webhook server took per admission review.
	served *durations
}

type clusterOptions struct {
	certValidity, caValidity time.Duration
}

func startCluster(tb testing.TB, opts clusterOptions) *cluster {
	tb.Helper()
	logf.SetLogger(logr.Discard())
	log := logr.Discard()
	if os.Getenv("REKEY_TEST_LOG") != "" {
		log = zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true))
	}
	restCfg, _ := envtest.Start(tb)
	rec := &warningRecorder{}
	withWarnings := rest.CopyConfig(restCfg)
	withWarnings.WarningHandler = rec
	withWarnings.QPS, withWarnings.Burst = 1000, 1000
	c, err := client.New(withWarnings, client.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	mustCreate(tb, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: webhookNamespace}})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	installWebhookConfiguration(tb, c, fmt.Sprintf("https://localhost:%d", port))

	certCfg := certs.DefaultConfig()
	certCfg.Namespace = webhookNamespace
	certCfg.CertDir = tb.TempDir()
	certCfg.ExtraSANs = []string{"localhost"}
	certCfg.CheckInterval = 500 * time.Millisecond
	if opts.certValidity > 0 {
		certCfg.CertValidity, certCfg.CAValidity = opts.certValidity, opts.caValidity
	}
	mgr, err := webhook.NewManager(restCfg, webhook.ServerOptions{
		Host: "127.0.0.1", Port: port, CertDir: certCfg.CertDir,
		HealthAddr: "0", MetricsAddr: "0",
		LeaderElect: true, LeaderElectionID: "rekey-webhook", Namespace: webhookNamespace,
	}, log)
	if err != nil {
		tb.Fatal(err)
	}
	direct, err := client.New(restCfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		tb.Fatal(err)
	}
	authority, err := certs.New(certCfg, direct, true, log)
	if err != nil {
		tb.Fatal(err)
	}
	if err := authority.Bootstrap(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := authority.Add(mgr); err != nil {
		tb.Fatal(err)
	}
	cfg := webhook.DefaultConfig()
	cfg.Image = "rekey.dev/rekey-sidecar:test"
	inj, err := webhook.NewCachedInjector(ctx, mgr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	served := &durations{}
	h := webhook.NewHandler(inj)
	mgr.GetWebhookServer().Register(webhook.Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		served.add(time.Since(start))
	}))
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Logf("manager: %v", err)
		}
	})
	cl := &cluster{client: c, warnings: rec, addr: fmt.Sprintf("127.0.0.1:%d", port), certs: certCfg, served: served}
	// Ready when the leader patched the caBundle and the server answers TLS
	// with a certificate that bundle trusts.
	eventually(tb, 30*time.Second, func() error {
		_, err := cl.handshake(ctx)
		return err
	})
	return cl
}

// installWebhookConfiguration creates manifests/webhook's configuration with
// each entry pointed at url instead of the in-cluster Service.
func installWebhookConfiguration(tb testing.TB, c client.Client, url string) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "manifests", "webhook", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(b, &mwc); err != nil {
		tb.Fatalf("manifest: %v", err)
	}
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		cc.URL = ptr.To(url + *cc.Service.Path)
		cc.Service = nil
	}
	mustCreate(tb, c, &mwc)
}

// handshake dials the webhook trusting only the configuration's caBundle and
// answers the leaf certificate it serves.
func (cl *cluster) handshake(ctx context.Context) (*x509.Certificate, error) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := cl.client.Get(ctx, types.NamespacedName{Name: cl.certs.WebhookConfigName}, &mwc); err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, wh := range mwc.Webhooks {
		if !roots.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
			return nil, fmt.Errorf("webhook %s has no caBundle yet", wh.Name)
		}
	}
	conn, err := tls.Dial("tcp", cl.addr, &tls.Config{RootCAs: roots, ServerName: "rekey-webhook.rekey-system.svc", MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func (cl *cluster) secret(ctx context.Context, tb testing.TB) *corev1.Secret {
	tb.Helper()
	var s corev1.Secret
	if err := cl.client.Get(ctx, types.NamespacedName{Namespace: webhookNamespace, Name: cl.certs.SecretName}, &s); err != nil {
		tb.Fatal(err)
	}
	return &s
}

func mustCreate(tb testing.TB, c client.Client, objs ...client.Object) {
	tb.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			tb.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func eventually(tb testing.TB, timeout time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// s3Volume creates a PV of our driver pre-bound to a claim, and the claim.
func s3Volume(name, ns string, attrs map[string]string, secretNS string) []client.Object {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Ti")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			ClaimRef:    &corev1.ObjectReference{Namespace: ns, Name: name},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: contract.DriverName, VolumeHandle: "bucket-" + ns + "-" + name, VolumeAttributes: attrs,
			}},
		},
	}
	if secretNS != "" {
		pv.Spec.CSI.NodePublishSecretRef = &corev1.SecretReference{Name: "s3-keys", Namespace: secretNS}
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			VolumeName:  pv.Name,
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Ti")}},
		},
	}
	return []client.Object{pv, pvc}
}

func testPod(ns, generateName string, annotations, labels map[string]string, vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: generateName, Namespace: ns, Annotations: annotations, Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0"}},
			Volumes:    vols,
		},
	}
}

func withServiceAccount(p *corev1.Pod) *corev1.Pod {
	p.Spec.ServiceAccountName = "default"
	return p
}

func claim(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}
}

func injected(p *corev1.Pod) bool {
	return p.Annotations[contract.StatusAnnotation] == contract.StatusInjected &&
		slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
			return c.Name == contract.SidecarContainerName && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		})
}

// TestCluster runs the webhook against a real API server: the stored pods
// are mutated exactly when they should be, the self-signed mode patched the
// caBundle the API server uses, and certificate rotation never interrupts
// admission.
func TestCluster(t *testing.T) {
	// Short lifetimes so the CA and serving certificate rotate during the test.
	cl := startCluster(t, clusterOptions{certValidity: 12 * time.Second, caValidity: 24 * time.Second})
	ctx := context.Background()
	c := cl.client

	mustCreate(t, c,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "labeled", Labels: map[string]string{contract.InjectionLabel: contract.InjectionEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	for _, ns := range []string{"labeled", "plain"} {
		mustCreate(t, c, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-keys", Namespace: ns},
			StringData: map[string]string{contract.SecretKeyAkID: "id", contract.SecretKeyAkSecret: "secret"}})
		mustCreate(t, c, s3Volume("data", ns, map[string]string{"bucket": "b", "url": "http://s3:9000"}, ns)...)
	}
	mustCreate(t, c, s3Volume("rrsa", "labeled", map[string]string{"bucket": "b", "url": "http://s3:9000",
		"authType": "rrsa", "roleArn": "acs:ram::1:role/r", "oidcProviderArn": "acs:ram::1:oidc-provider/p"}, "")...)
	mustCreate(t, c, s3Volume("shared", "labeled", map[string]string{"bucket": "b", "url": "http://s3:9000"}, "plain")...)
	mustCreate(t, c, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "pending", Namespace: "labeled"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Ti")}},
		},
	})
	inline := corev1.Volume{Name: "inline", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: contract.DriverName, NodePublishSecretRef: &corev1.LocalObjectReference{Name: "s3-keys"}}}}
	optIn := map[string]string{contract.InjectAnnotation: "true"}
	optOut := map[string]string{contract.InjectAnnotation: "false"}

	t.Run("caBundle", func(t *testing.T) {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: cl.certs.WebhookConfigName}, &mwc); err != nil {
			t.Fatal(err)
		}
		if len(mwc.Webhooks) != 2 {
			t.Fatalf("%d webhooks, want 2", len(mwc.Webhooks))
		}
		for _, wh := range mwc.Webhooks {
			if len(wh.ClientConfig.CABundle) == 0 {
				t.Errorf("webhook %s: empty caBundle", wh.Name)
			}
		}
	})

	for _, tc := range []struct {
		name         string
		pod          *corev1.Pod
		wantInjected bool
		wantWarning  string
	}{
		{"namespace label", testPod("labeled", "ns-", nil, nil, claim("data")), true, ""},
		{"annotation true", testPod("plain", "anno-", optIn, nil, claim("data")), true, ""},
		{"annotation false", testPod("labeled", "optout-", optOut, nil, claim("data")), false, ""},
		{"not opted in", testPod("plain", "plain-", nil, nil, claim("data")), false, ""},
		{"no rekey volume", testPod("labeled", "novol-", nil, nil, corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}), false, ""},
		{"inline csi", testPod("labeled", "inline-", nil, nil, inline), true, ""},
		// envtest disables the ServiceAccount admission plugin, which would
		// set serviceAccountName; token projections require one.
		{"rrsa", withServiceAccount(testPod("labeled", "rrsa-", nil, nil, claim("rrsa"))), true, ""},
		{"pvc unbound", testPod("labeled", "pending-", nil, nil, claim("pending")), false, "is not bound yet"},
		{"secret in another namespace", testPod("labeled", "shared-", nil, nil, claim("shared"), claim("data")), true, "in another namespace"},
		{"kube-system", testPod("kube-system", "sys-", optIn, nil, inline), false, ""},
		{"own pod", testPod("labeled", "self-", nil, map[string]string{webhook.SelfLabelKey: webhook.SelfLabelValue}, claim("data")), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl.warnings.take()
			if err := c.Create(ctx, tc.pod); err != nil {
				t.Fatalf("create: %v", err)
			}
			warnings := cl.warnings.take()
			var stored corev1.Pod
			if err := c.Get(ctx, client.ObjectKeyFromObject(tc.pod), &stored); err != nil {
				t.Fatal(err)
			}
			if got := injected(&stored); got != tc.wantInjected {
				t.Errorf("injected = %v, want %v; init containers %v", got, tc.wantInjected, stored.Spec.InitContainers)
			}
			if tc.wantWarning != "" && !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, tc.wantWarning) }) {
				t.Errorf("warnings %q lack %q", warnings, tc.wantWarning)
			}
		})
	}

	t.Run("kubectl debug", func(t *testing.T) {
		// An ephemeral container added to an injected pod (what kubectl
		// debug does, through the pods/ephemeralcontainers subresource)
		// may not mount the sidecar's socket volume; one without it may.
		p := testPod("labeled", "debug-", nil, nil, claim("data"))
		mustCreate(t, c, p)
		if !injected(p) {
			t.Fatalf("pod %s not injected", p.Name)
		}
		add := func(name string, mounts ...corev1.VolumeMount) error {
			var cur corev1.Pod
			if err := c.Get(ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
				t.Fatal(err)
			}
			cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: "busybox", VolumeMounts: mounts}})
			return c.SubResource("ephemeralcontainers").Update(ctx, &cur)
		}
		err := add("steal", corev1.VolumeMount{Name: contract.SocketVolumeName, MountPath: "/run/rekey"})
		if err == nil || !strings.Contains(err.Error(), "may not mount the sidecar's volume") {
			t.Fatalf("ephemeral container mounting %s: %v, want denied by the webhook", contract.SocketVolumeName, err)
		}
		if err := add("debug"); err != nil {
			t.Fatalf("ephemeral container without the socket volume: %v", err)
		}
	})

	t.Run("claim younger than the cache", func(t *testing.T) {
		// PV, PVC and pod in quick succession: the cache may not have the
		// claim yet, the live fallback must find it.
		for i := range 5 {
			name := fmt.Sprintf("fresh-%d", i)
			mustCreate(t, c, s3Volume(name, "labeled", map[string]string{"bucket": "b", "url": "http://s3:9000"}, "labeled")...)
			p := testPod("labeled", name+"-", nil, nil, claim(name))
			mustCreate(t, c, p)
			if !injected(p) {
				t.Fatalf("pod %s not injected", p.Name)
			}
		}
	})

	t.Run("rotation", func(t *testing.T) {
		// Keep admitting pods (failurePolicy Fail) while the CA and the
		// serving certificate rotate; every pod must be injected, and the
		// server must end up serving the Secret's current certificate.
		caBefore := cl.secret(ctx, t).Data[certs.KeyCACert]
		firstCA, _ := pemFirst(caBefore)
		deadline := time.Now().Add(45 * time.Second)
		created := 0
		for {
			p := testPod("labeled", "rot-", nil, nil, claim("data"))
			if err := c.Create(ctx, p); err != nil {
				t.Fatalf("create during rotation: %v", err)
			}
			if !injected(p) {
				t.Fatalf("pod %s not injected during rotation", p.Name)
			}
			created++
			ca, _ := pemFirst(cl.secret(ctx, t).Data[certs.KeyCACert])
			if !bytes.Equal(ca, firstCA) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("CA did not rotate")
			}
			time.Sleep(100 * time.Millisecond)
		}
		want := cl.secret(ctx, t).Data[certs.KeyTLSCert]
		eventually(t, 15*time.Second, func() error {
			leaf, err := cl.handshake(ctx)
			if err != nil {
				return err
			}
			w, _ := pemFirst(want)
			if !bytes.Equal(leaf.Raw, w) {
				return fmt.Errorf("server still serves an older certificate")
			}
			return nil
		})
		p := testPod("labeled", "after-", nil, nil, claim("data"))
		mustCreate(t, c, p)
		if !injected(p) {
			t.Fatal("pod after rotation not injected")
		}
		t.Logf("%d pods admitted across a CA rotation", created)
	})
}

// pemFirst answers the DER of the first certificate in b.
func pemFirst(b []byte) ([]byte, error) {
	certs, err := parsePEMCerts(b)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("no certificate: %w", err)
	}
	return certs[0].Raw, nil
}

func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// durations is a concurrency-safe latency sample.
type durations struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *durations) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *durations) reset() {
	s.mu.Lock()
	s.d = nil
	s.mu.Unlock()
}

// quantiles answers p50 and p99 of the sample.
func (s *durations) quantiles() (p50, p99 time.Duration, n int) {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	if len(d) == 0 {
		return 0, 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)*50/100], d[min(len(d)-1, len(d)*99/100)], len(d)
}
