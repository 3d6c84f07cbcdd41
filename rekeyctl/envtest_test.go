package rekeyctl_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	"rekey.dev/rekey/csidriver/volstatus"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/envtest"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/rekeyctl"
)

var clusterKey = []byte("0123456789abcdef0123456789abcdef")

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func secretWith(ns, name string, k keys.Keys) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		StringData: map[string]string{contract.SecretKeyAkID: k.AccessKeyID, contract.SecretKeyAkSecret: k.SecretAccessKey}}
}

func fp(t *testing.T, k keys.Keys) string {
	t.Helper()
	s, err := k.KeyedFingerprint(clusterKey)
	must(t, err)
	return s
}

// world is a cluster with rekey's fingerprint key, a PersistentVolume of the
// driver whose Secret is shop/s3-keys, three pods mounting it through a
// claim (on two nodes), one pod with an inline volume of batch/keys and one
// pod with an unrelated volume.
type world struct {
	c          client.Client
	cfg        *rest.Config
	env        *crenvtest.Environment
	oldK, newK keys.Keys
	pods       map[string]*corev1.Pod
	w          *volstatus.Writer
	mounts     map[string]volstatus.Mount
}

func setup(t *testing.T) *world {
	t.Helper()
	cfg, env := envtest.StartWithCRDs(t)
	c := envtest.Client(t, cfg)
	ctx := context.Background()
	for _, ns := range []string{"rekey-system", "shop", "batch"} {
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "rekey-system", Name: contract.FingerprintKeySecret},
		Data: map[string][]byte{contract.FingerprintKeyEntry: clusterKey}}))
	wd := &world{c: c, cfg: cfg, env: env, pods: map[string]*corev1.Pod{}, mounts: map[string]volstatus.Mount{},
		oldK: keys.Keys{AccessKeyID: "AKOLD", SecretAccessKey: "old-secret"},
		newK: keys.Keys{AccessKeyID: "AKNEW", SecretAccessKey: "new-secret"}}
	must(t, c.Create(ctx, secretWith("shop", "s3-keys", wd.oldK)))
	must(t, c.Create(ctx, secretWith("batch", "keys", wd.oldK)))
	must(t, c.Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-assets"},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: contract.DriverName,
				VolumeHandle: "assets-handle", VolumeAttributes: map[string]string{"bucket": "assets"},
				NodePublishSecretRef: &corev1.SecretReference{Namespace: "shop", Name: "s3-keys"}}}}}))
	sc := ""
	must(t, c.Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "assets"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			StorageClassName: &sc, VolumeName: "pv-assets",
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}))
	pod := func(ns, name, node string, vols ...corev1.Volume) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{NodeName: node, Volumes: vols, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
		must(t, c.Create(ctx, p))
		wd.pods[name] = p
	}
	claim := corev1.Volume{Name: "assets", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "assets"}}}
	pod("shop", "web-0", "node-a", claim)
	pod("shop", "web-1", "node-b", claim)
	pod("shop", "web-2", "node-b", claim)
	pod("shop", "cache", "node-a", corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	pod("batch", "etl", "node-a", corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: contract.DriverName, NodePublishSecretRef: &corev1.LocalObjectReference{Name: "keys"}}}})

	wd.w = volstatus.New(volstatus.Config{Client: c, Node: "node-a", Version: "test", Log: logr.Discard(), QPS: 100, Burst: 100})
	for _, name := range []string{"web-0", "web-1", "web-2"} {
		p := wd.pods[name]
		wd.mounts[name] = volstatus.Mount{MountID: "m-" + name, PodName: name, PodNamespace: "shop", PodUID: string(p.UID),
			VolumeID: "assets-handle", AuthType: "secret"}
	}
	etl := wd.pods["etl"]
	wd.mounts["etl"] = volstatus.Mount{MountID: "m-etl", PodName: "etl", PodNamespace: "batch", PodUID: string(etl.UID),
		VolumeID: contract.EphemeralVolumeID(string(etl.UID), "data"), AuthType: "secret"}
	return wd
}

// apply writes statuses through the node plugin's own writer.
func (wd *world) apply(t *testing.T, fps map[string]string, at time.Time) {
	t.Helper()
	for name, f := range fps {
		wd.w.Applied(wd.mounts[name], f, time.Time{}, "sidecar", at)
	}
	wd.w.Flush(context.Background())
}

// TestStatusTableFromCluster: the table kubectl rekey status prints for a
// real API server: PV and inline volumes, a pod without status, a stale
// one with its refusal, unrelated pods left out (golden output).
func TestStatusTableFromCluster(t *testing.T) {
	wd := setup(t)
	applied := time.Date(2026, 12, 6, 11, 55, 0, 0, time.UTC)
	wd.apply(t, map[string]string{"web-0": fp(t, wd.oldK), "web-1": fp(t, wd.oldK), "etl": fp(t, wd.oldK)}, applied)
	must(t, wd.c.Update(context.Background(), secretWith("shop", "s3-keys", wd.newK)))
	wd.apply(t, map[string]string{"web-0": fp(t, wd.newK)}, applied.Add(2*time.Minute))
	wd.w.Refused(wd.mounts["web-1"], "access denied (code=AccessDenied)", "sidecar", applied.Add(3*time.Minute))
	wd.w.Flush(context.Background())

	l := &rekeyctl.Lister{C: wd.c, RekeyNamespace: "rekey-system"}
	now := applied.Add(5 * time.Minute)
	var out bytes.Buffer
	must(t, rekeyctl.Run(context.Background(), rekeyctl.Command{Name: "status", Lister: l, Out: &out, Now: func() time.Time { return now }}))
	rekeyctl.Golden(t, "cluster-status-A.golden", out.Bytes())
	out.Reset()
	must(t, rekeyctl.Run(context.Background(), rekeyctl.Command{Name: "status", Lister: l, Scope: rekeyctl.Scope{Namespace: "shop", Pod: "web-1"},
		Out: &out, Now: func() time.Time { return now }}))
	rekeyctl.Golden(t, "cluster-status-pod.golden", out.Bytes())
}

// TestWaitReturnsOnceAllSwapped: wait keeps reporting the laggards until
// the last mount of the Secret reports the new keys, then returns.
func TestWaitReturnsOnceAllSwapped(t *testing.T) {
	wd := setup(t)
	at := time.Now()
	wd.apply(t, map[string]string{"web-0": fp(t, wd.oldK), "web-1": fp(t, wd.oldK), "web-2": fp(t, wd.oldK), "etl": fp(t, wd.oldK)}, at)
	must(t, wd.c.Update(context.Background(), secretWith("shop", "s3-keys", wd.newK)))
	l := &rekeyctl.Lister{C: wd.c, RekeyNamespace: "rekey-system"}
	var out syncBuffer
	type result struct {
		p   rekeyctl.Progress
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := l.Wait(context.Background(), rekeyctl.WaitOptions{Secret: "shop/s3-keys", Timeout: time.Minute, Interval: 100 * time.Millisecond, Out: &out})
		done <- result{p, err}
	}()
	waitOutput(t, &out, "0/3 mounts on "+fp(t, wd.newK)+", waiting for 3")
	wd.apply(t, map[string]string{"web-0": fp(t, wd.newK), "web-1": fp(t, wd.newK)}, at)
	waitOutput(t, &out, "2/3 mounts on "+fp(t, wd.newK)+", waiting for 1: shop/web-2 (pv-assets")
	select {
	case r := <-done:
		t.Fatalf("wait returned with a mount on the old keys: %+v, %v", r.p, r.err)
	default:
	}
	wd.apply(t, map[string]string{"web-2": fp(t, wd.newK)}, at)
	r := <-done
	if r.err != nil || !r.p.Done() || r.p.Total != 3 || r.p.Current != 3 {
		t.Fatalf("wait = %+v, %v\n%s", r.p, r.err, out.String())
	}
	if !strings.Contains(out.String(), "all 3 mounts of Secret shop/s3-keys run its current keys") {
		t.Errorf("output:\n%s", out.String())
	}
}

// TestWaitTimesOutNamingLaggards: a mount without status and one on the old
// keys make wait fail after its timeout, naming both.
func TestWaitTimesOutNamingLaggards(t *testing.T) {
	wd := setup(t)
	wd.apply(t, map[string]string{"web-0": fp(t, wd.newK), "web-1": fp(t, wd.oldK)}, time.Now())
	must(t, wd.c.Update(context.Background(), secretWith("shop", "s3-keys", wd.newK)))
	l := &rekeyctl.Lister{C: wd.c, RekeyNamespace: "rekey-system"}
	var out bytes.Buffer
	_, err := l.Wait(context.Background(), rekeyctl.WaitOptions{Secret: "shop/s3-keys", Timeout: 300 * time.Millisecond, Interval: 100 * time.Millisecond, Out: &out})
	var ns *rekeyctl.NotSafeError
	if !errors.As(err, &ns) || len(ns.Progress.Waiting) != 2 {
		t.Fatalf("err = %v, want NotSafeError with 2 laggards", err)
	}
	for _, want := range []string{"shop/web-1 (pv-assets, on " + fp(t, wd.oldK), "shop/web-2 (pv-assets, no status yet, node node-b)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// An unused Secret is safe at once; a missing one is an error.
	must(t, wd.c.Create(context.Background(), secretWith("shop", "unused", wd.newK)))
	if p, err := l.Wait(context.Background(), rekeyctl.WaitOptions{Secret: "shop/unused", Timeout: time.Second, Out: &out}); err != nil || p.Total != 0 {
		t.Errorf("unused Secret: %+v, %v", p, err)
	}
	if _, err := l.Wait(context.Background(), rekeyctl.WaitOptions{Secret: "shop/nope", Timeout: time.Second, Out: &out}); !errors.Is(err, rekeyctl.ErrSecretNotFound) {
		t.Errorf("missing Secret: err = %v", err)
	}
}

// TestErrorsSayWhatToDo: no permission, and no CRD.
func TestErrorsSayWhatToDo(t *testing.T) {
	wd := setup(t)
	user, err := wd.env.ControlPlane.AddUser(crenvtest.User{Name: "dev", Groups: []string{"devs"}}, nil)
	must(t, err)
	l := &rekeyctl.Lister{C: envtest.Client(t, user.Config()), RekeyNamespace: "rekey-system"}
	_, err = l.Mounts(context.Background(), rekeyctl.Scope{Namespace: "shop"})
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "permission denied; ask for get/list") {
		t.Errorf("no RBAC: %v", err)
	}
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(apiextensionsCRD)
	crd.SetName("rekeyvolumestatuses.rekey.dev")
	must(t, client.IgnoreNotFound(wd.c.Delete(context.Background(), crd)))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := envtest.Client(t, wd.cfg) // a fresh client: no cached discovery
		_, err = (&rekeyctl.Lister{C: c, RekeyNamespace: "rekey-system"}).Mounts(context.Background(), rekeyctl.Scope{})
		if err != nil && strings.Contains(err.Error(), "the RekeyVolumeStatus CRD is not installed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without the CRD: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRotateWritesThenWaits: rotate refuses entries that would leave the
// Secret unusable (writing nothing), writes valid new keys, and returns
// once every mount reports them, telling which key to revoke.
func TestRotateWritesThenWaits(t *testing.T) {
	wd := setup(t)
	at := time.Now()
	wd.apply(t, map[string]string{"web-0": fp(t, wd.oldK), "web-1": fp(t, wd.oldK), "web-2": fp(t, wd.oldK)}, at)
	l := &rekeyctl.Lister{C: wd.c, RekeyNamespace: "rekey-system"}
	ctx := context.Background()
	var out syncBuffer

	// Two naming conventions at once: refused before any write.
	_, err := l.Rotate(ctx, rekeyctl.RotateOptions{Entries: map[string][]byte{contract.SecretKeyAccessKeyID: []byte("AKX")},
		WaitOptions: rekeyctl.WaitOptions{Secret: "shop/s3-keys", Timeout: time.Second, Out: &out}})
	if !errors.Is(err, keys.ErrAmbiguous) {
		t.Fatalf("ambiguous entries: err = %v", err)
	}
	var s corev1.Secret
	must(t, wd.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "s3-keys"}, &s))
	if _, ok := s.Data[contract.SecretKeyAccessKeyID]; ok {
		t.Fatal("the refused entries were written")
	}

	type result struct {
		p   rekeyctl.Progress
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := l.Rotate(ctx, rekeyctl.RotateOptions{
			Entries:     map[string][]byte{contract.SecretKeyAkID: []byte(wd.newK.AccessKeyID), contract.SecretKeyAkSecret: []byte(wd.newK.SecretAccessKey + "\n")},
			WaitOptions: rekeyctl.WaitOptions{Secret: "shop/s3-keys", Timeout: time.Minute, Interval: 100 * time.Millisecond, Out: &out}})
		done <- result{p, err}
	}()
	waitOutput(t, &out, "Secret shop/s3-keys updated: keys "+fp(t, wd.oldK)+" -> "+fp(t, wd.newK))
	waitOutput(t, &out, "0/3 mounts on "+fp(t, wd.newK))
	wd.apply(t, map[string]string{"web-0": fp(t, wd.newK), "web-1": fp(t, wd.newK), "web-2": fp(t, wd.newK)}, at)
	r := <-done
	if r.err != nil || r.p.Current != 3 {
		t.Fatalf("rotate = %+v, %v\n%s", r.p, r.err, out.String())
	}
	waitOutput(t, &out, "revoke the old key AKOLD at your provider now")
}
