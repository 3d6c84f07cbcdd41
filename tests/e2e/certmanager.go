package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"rekey.dev/rekey/internal/contract"
)

// The cert-manager step switches the running install from the self-signed
// mode to manifests/components/cert-manager against a real cert-manager
// (controller and cainjector built by tests/cluster/build-cert-manager.sh,
// run as host processes with the admin kubeconfig), then checks: the webhook
// serves the certificate cert-manager issued, cainjector filled the caBundle
// with the issuing CA, pods are injected, and a forced renewal of the
// serving certificate causes no failed admission while pods are admitted in
// a loop.
const (
	cmOverlay     = "tests/e2e/overlay-cert-manager"
	cmNamespace   = "rekey-system"
	cmCertificate = "rekey-webhook-serving"
	cmServingTLS  = "rekey-webhook-serving-tls"
	cmCASecret    = "rekey-webhook-ca" //nolint:gosec // a Secret's name, not a credential
	cmWebhookAddr = "localhost:19443"
	cmAppNS       = "cert-manager-e2e" // labelled for injection; the step's own
	cmKeys        = "bucket-keys"
)

func certManagerStep(ctx context.Context, o options, c *Cluster) error {
	t := time.Now()
	dir, err := output(ctx, o.repo, "tests/cluster/build-cert-manager.sh")
	if err != nil {
		return err
	}
	logf("cert-manager: binaries %s (%.1fs)", dir, time.Since(t).Seconds())
	t = time.Now()
	if _, err := c.kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(dir, "crds")); err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/certificates.cert-manager.io", "crd/certificaterequests.cert-manager.io", "crd/issuers.cert-manager.io"); err != nil {
		return err
	}
	var procs []*proc
	for _, name := range []string{"controller", "cainjector"} {
		p, err := c.start("cert-manager-"+name, filepath.Join(dir, "bin", name), "--kubeconfig", c.Kubeconfig())
		if err != nil {
			return err
		}
		defer p.stop(10 * time.Second)
		procs = append(procs, p)
	}
	// running fails a wait at once when a cert-manager process has exited.
	running := func() error {
		for _, p := range procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited (see %s)", p.name, c.path("logs", p.name+".log"))
			default:
			}
		}
		return nil
	}
	if _, err := c.kubectl(ctx, "apply", "-k", filepath.Join(o.repo, cmOverlay)); err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, "-n", cmNamespace, "wait", "--for=condition=Ready", "--timeout=120s",
		"certificate/rekey-webhook-ca", "certificate/"+cmCertificate); err != nil {
		return withDescribe(ctx, c, err, cmNamespace, "certificates")
	}
	if _, err := c.kubectl(ctx, "-n", cmNamespace, "rollout", "status", "deployment/rekey-webhook", "--timeout=120s"); err != nil {
		return withDescribe(ctx, c, err, cmNamespace, "pods")
	}
	logf("cert-manager: installed with %s, Certificates Ready in %.1fs", cmOverlay, time.Since(t).Seconds())

	cs, err := clientset(c)
	if err != nil {
		return err
	}
	if err := cmAppNamespace(ctx, cs); err != nil {
		return err
	}
	defer func() {
		_ = cs.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), cmAppNS, metav1.DeleteOptions{})
	}()
	ca, err := secretCert(ctx, cs, cmCASecret, "tls.crt")
	if err != nil {
		return err
	}
	// issued + injected: the webhook serves the Secret's certificate, signed
	// by cert-manager's CA, and every webhook's caBundle is that CA.
	var first *x509.Certificate
	if err := waitFor(ctx, 120*time.Second, "webhook serving the cert-manager certificate through the injected caBundle", func() error {
		if err := running(); err != nil {
			return err
		}
		first, err = servedMatchesSecret(ctx, cs, ca)
		return err
	}); err != nil {
		return err
	}
	logf("cert-manager: webhook serves serial %s issued by %q; cainjector added that CA to the caBundle", first.SerialNumber, first.Issuer.CommonName)
	if err := createInjectedPod(ctx, cs); err != nil {
		return err
	}

	// renewed: what `cmctl renew` does (condition Issuing=True), while
	// admissions go on; the webhook's pods must serve the new pair
	// without a restart (controller-runtime's certificate watcher).
	podsBefore, err := webhookPods(ctx, cs)
	if err != nil {
		return err
	}
	stamp := time.Now().UTC().Format(time.RFC3339)
	if _, err := c.kubectl(ctx, "-n", cmNamespace, "patch", "certificate", cmCertificate, "--subresource=status", "--type=json", "-p",
		`[{"op":"add","path":"/status/conditions/-","value":{"type":"Issuing","status":"True","reason":"ManuallyTriggered","message":"e2e: forced renewal","lastTransitionTime":"`+stamp+`"}}]`); err != nil {
		return err
	}
	t = time.Now()
	admitted, failed, after := 0, 0, -1
	var failures []string
	var renewed *x509.Certificate
	deadline := time.Now().Add(5 * time.Minute)
	for after < 20 {
		if err := running(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cert-manager: the webhook did not serve a renewed certificate within 5 minutes (%d admitted, %d failed)", admitted, failed)
		}
		if err := admitDryRun(ctx, cs); err != nil {
			failed++
			if len(failures) < 5 {
				failures = append(failures, err.Error())
			}
		}
		admitted++
		if after >= 0 {
			after++
		} else if leaf, err := servedMatchesSecret(ctx, cs, ca); err == nil && leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed, after = leaf, 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := createInjectedPod(ctx, cs); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("cert-manager: %d of %d admissions failed across the renewal: %s", failed, admitted, strings.Join(failures, "; "))
	}
	podsAfter, err := webhookPods(ctx, cs)
	if err != nil {
		return err
	}
	if podsAfter != podsBefore {
		return fmt.Errorf("cert-manager: the webhook's pods changed or restarted across the renewal (%s → %s); it must reload the pair in place", podsBefore, podsAfter)
	}
	logf("cert-manager: renewal served after %.1fs (serial %s → %s) by the same webhook pods, none restarted; %d admissions across it, 0 failed",
		time.Since(t).Seconds(), first.SerialNumber, renewed.SerialNumber, admitted)
	fmt.Println("E2E cert-manager: issued, injected, renewed with 0 failed admissions")
	return nil
}

// webhookPods names the webhook's pods with their UIDs and container
// restart counts, sorted: equal before and after means no pod was
// replaced or restarted.
func webhookPods(ctx context.Context, cs *kubernetes.Clientset) (string, error) {
	pods, err := cs.CoreV1().Pods(cmNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=rekey-webhook"})
	if err != nil {
		return "", err
	}
	var out []string
	for _, p := range pods.Items {
		restarts := int32(0)
		for _, st := range p.Status.ContainerStatuses {
			restarts += st.RestartCount
		}
		out = append(out, fmt.Sprintf("%s/%s restarts=%d", p.Name, p.UID, restarts))
	}
	if len(out) == 0 {
		return "", errors.New("cert-manager: no webhook pod")
	}
	slices.Sort(out)
	return strings.Join(out, ", "), nil
}

func clientset(c *Cluster) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func secretCert(ctx context.Context, cs *kubernetes.Clientset, name, key string) (*x509.Certificate, error) {
	s, err := cs.CoreV1().Secrets(cmNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(s.Data[key])
	if b == nil {
		return nil, fmt.Errorf("secret %s: no certificate in %s", name, key)
	}
	return x509.ParseCertificate(b.Bytes)
}

// servedMatchesSecret checks that the caBundle of every webhook holds the CA
// ca, dials the webhook trusting ca alone, and answers the leaf it serves if
// that is the serving Secret's current certificate.
func servedMatchesSecret(ctx context.Context, cs *kubernetes.Clientset, ca *x509.Certificate) (*x509.Certificate, error) {
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "rekey-webhook", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, wh := range mwc.Webhooks {
		bundle, err := pemCerts(wh.ClientConfig.CABundle)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: caBundle: %w", wh.Name, err)
		}
		// cainjector adds the Certificate's ca.crt to the bundle and keeps
		// earlier CAs until they expire (here the self-signed mode's CA).
		if !slices.ContainsFunc(bundle, ca.Equal) {
			return nil, fmt.Errorf("webhook %s: caBundle %s lacks cert-manager's CA %s", wh.Name, describe(bundle), describe([]*x509.Certificate{ca}))
		}
		// Trust cert-manager's CA alone: the served leaf must chain to it.
		roots.AddCert(ca)
	}
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", cmWebhookAddr)
	if err != nil {
		return nil, err
	}
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	_ = conn.Close()
	want, err := secretCert(ctx, cs, cmServingTLS, "tls.crt")
	if err != nil {
		return nil, err
	}
	if !leaf.Equal(want) {
		return nil, errors.New("webhook does not serve the Secret's certificate yet")
	}
	return leaf, nil
}

func pemCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// describe names certificates by subject and serial for error messages.
func describe(certs []*x509.Certificate) string {
	var s []string
	for _, c := range certs {
		s = append(s, fmt.Sprintf("%q#%s", c.Subject.String(), c.SerialNumber))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// cmAppNamespace creates the step's namespace, labelled for injection, with
// the Secret its pods' inline volumes name.
func cmAppNamespace(ctx context.Context, cs *kubernetes.Clientset) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cmAppNS,
		Labels: map[string]string{contract.InjectionLabel: contract.InjectionEnabled}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("cert-manager: namespace: %w", err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: cmKeys, Namespace: cmAppNS},
		StringData: map[string]string{contract.SecretKeyAkID: firstKeys.AccessKeyID, contract.SecretKeyAkSecret: firstKeys.SecretAccessKey}}
	if _, err := cs.CoreV1().Secrets(cmAppNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("cert-manager: secret: %w", err)
	}
	// Pods are refused until the controller manager made the namespace's
	// default ServiceAccount.
	return waitFor(ctx, 60*time.Second, "ServiceAccount default in "+cmAppNS, func() error {
		_, err := cs.CoreV1().ServiceAccounts(cmAppNS).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func cmPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name, Namespace: cmAppNS},
		Spec: corev1.PodSpec{
			// Never runs: no such node; the admission is what counts.
			NodeName:   "e2e-cert-manager-nowhere",
			Containers: []corev1.Container{{Name: "app", Image: loadgenImage, ImagePullPolicy: corev1.PullNever}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
				Driver:               contract.DriverName,
				VolumeAttributes:     map[string]string{"bucket": "e2e-bucket", "url": "http://127.0.0.1:19000"},
				NodePublishSecretRef: &corev1.LocalObjectReference{Name: cmKeys},
			}}}},
		},
	}
}

func podInjected(p *corev1.Pod) error {
	if p.Annotations[contract.StatusAnnotation] != contract.StatusInjected {
		return fmt.Errorf("pod %s not injected (annotations %v)", p.Name, p.Annotations)
	}
	for _, ic := range p.Spec.InitContainers {
		if ic.Name == contract.SidecarContainerName {
			return nil
		}
	}
	for _, ct := range p.Spec.Containers {
		if ct.Name == contract.SidecarContainerName {
			return nil
		}
	}
	return fmt.Errorf("pod %s has no %s container", p.Name, contract.SidecarContainerName)
}

// admitDryRun sends one pod through admission (server-side dry run: the
// webhook is called, nothing is stored) and checks it came back injected.
func admitDryRun(ctx context.Context, cs *kubernetes.Clientset) error {
	p, err := cs.CoreV1().Pods(cmAppNS).Create(ctx, cmPod("cm-dry-"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return err
	}
	return podInjected(p)
}

// createInjectedPod stores one pod, checks it was injected, and removes it.
func createInjectedPod(ctx context.Context, cs *kubernetes.Clientset) error {
	p, err := cs.CoreV1().Pods(cmAppNS).Create(ctx, cmPod("cm-"), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("cert-manager: create pod: %w", err)
	}
	defer func() {
		_ = cs.CoreV1().Pods(cmAppNS).Delete(context.WithoutCancel(ctx), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}()
	if err := podInjected(p); err != nil {
		return fmt.Errorf("cert-manager: %w", err)
	}
	logf("cert-manager: pod %s/%s injected", cmAppNS, p.Name)
	return nil
}
