package volstatus_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	rekeyv1alpha1 "rekey.dev/rekey/api/v1alpha1"
	"rekey.dev/rekey/csidriver/volstatus"
	"rekey.dev/rekey/internal/envtest"
)

type cluster struct {
	cfg *rest.Config
	env *crenvtest.Environment
	c   client.Client
}

// start runs a kube-apiserver with the RekeyVolumeStatus CRD of manifests/crd.
func start(t testing.TB) cluster {
	t.Helper()
	cfg, env := envtest.StartWithCRDs(t)
	return cluster{cfg: cfg, env: env, c: envtest.Client(t, cfg)}
}

func (cl cluster) pod(t testing.TB, ns, name string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if err := cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if err := cl.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func mountOf(p *corev1.Pod, n int) volstatus.Mount {
	return volstatus.Mount{MountID: fmt.Sprintf("%s-mount-%d", p.UID, n), PodName: p.Name, PodNamespace: p.Namespace,
		PodUID: string(p.UID), VolumeID: fmt.Sprintf("pv-%d", n), AuthType: "secret"}
}

func newWriter(cl cluster, cfg volstatus.Config) (*volstatus.Writer, *prometheus.CounterVec) {
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "writes"}, []string{"result"})
	cfg.Client, cfg.Node, cfg.Version, cfg.Writes, cfg.Log = cl.c, "node-1", "v9.9.9", writes, logr.Discard()
	return volstatus.New(cfg), writes
}

func get(t *testing.T, cl cluster, m volstatus.Mount) (*rekeyv1alpha1.RekeyVolumeStatus, error) {
	t.Helper()
	var o rekeyv1alpha1.RekeyVolumeStatus
	err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: m.PodNamespace, Name: volstatus.Name(m)}, &o)
	return &o, err
}

// waitFor polls the mount's status until ok holds (a positive signal).
func waitFor(t *testing.T, cl cluster, m volstatus.Mount, what string, ok func(*rekeyv1alpha1.RekeyVolumeStatus) bool) *rekeyv1alpha1.RekeyVolumeStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := get(t, cl, m)
		if err == nil && ok(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: %s never happened (last: %+v, %v)", m.MountID, what, o.Status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWriterBatchesChanges: fifty swaps and a refusal of one mount within
// one window become a single write of the newest state, and the object
// carries the pod as owner, the key source, node and version.
func TestWriterBatchesChanges(t *testing.T) {
	cl := start(t)
	p := cl.pod(t, "batch", "app")
	w, writes := newWriter(cl, volstatus.Config{Window: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	m := mountOf(p, 1)
	t0 := time.Now().Truncate(time.Second)
	exp := t0.Add(time.Hour)
	for i := range 50 {
		w.Applied(m, fmt.Sprintf("AK%02d:0123456789abcdef", i), exp, "sidecar", t0)
	}
	w.Refused(m, "invalid credentials (code=InvalidAccessKeyId)", "sidecar", t0)
	o := waitFor(t, cl, m, "the 50th keys", func(o *rekeyv1alpha1.RekeyVolumeStatus) bool {
		return o.Status.Fingerprint == "AK49:0123456789abcdef" && o.Status.LastRefusal != nil
	})
	if n := testutil.ToFloat64(writes.WithLabelValues("ok")); n != 1 {
		t.Errorf("writes = %v, want 1 (51 changes in one window)", n)
	}
	st := o.Status
	if st.PodName != "app" || st.PodUID != p.UID || st.Node != "node-1" || st.NodePluginVersion != "v9.9.9" ||
		st.KeySource.AuthType != "secret" ||
		st.VolumeID != "pv-1" || st.AppliedBy != "sidecar" || !st.AppliedAt.Time.Equal(t0) || !st.Expiration.Time.Equal(exp) ||
		st.LastRefusal.Reason != "invalid credentials (code=InvalidAccessKeyId)" {
		t.Errorf("status = %+v", st)
	}
	refs := o.OwnerReferences
	if len(refs) != 1 || refs[0].Kind != "Pod" || refs[0].APIVersion != "v1" || refs[0].UID != p.UID || refs[0].Name != "app" {
		t.Errorf("ownerReferences = %+v, want the pod", refs)
	}
	if o.Labels[rekeyv1alpha1.LabelPod] != "app" || o.Labels[rekeyv1alpha1.LabelNode] != "node-1" {
		t.Errorf("labels = %v", o.Labels)
	}
}

// TestWriterRateLimited: 200 mounts changing at once are written once each,
// never faster than the configured rate (a token bucket's lower bound on
// time, not a speed target).
func TestWriterRateLimited(t *testing.T) {
	cl := start(t)
	p := cl.pod(t, "many", "app")
	const mounts, qps, burst = 200, 100, 10
	w, writes := newWriter(cl, volstatus.Config{QPS: qps, Burst: burst})
	for i := range mounts {
		w.Applied(mountOf(p, i), "AK:0123456789abcdef", time.Time{}, "csi-publish", time.Now())
	}
	start := time.Now()
	w.Flush(context.Background())
	took := time.Since(start)
	if n := testutil.ToFloat64(writes.WithLabelValues("ok")); n != mounts {
		t.Fatalf("writes = %v, want %d", n, mounts)
	}
	if min := time.Duration(float64(mounts-burst) / qps * float64(time.Second)); took < min*9/10 {
		t.Errorf("%d writes took %s, faster than %d/s allows (%s)", mounts, took, qps, min)
	}
	var list rekeyv1alpha1.RekeyVolumeStatusList
	if err := cl.c.List(context.Background(), &list, client.InNamespace("many")); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != mounts {
		t.Errorf("%d objects, want %d", len(list.Items), mounts)
	}
}

// TestWriterWinsConflicts: someone else edits the status (another field
// manager, an update with its own resourceVersion); the plugin's next write
// still succeeds and restores its fields, leaving the other's label alone.
func TestWriterWinsConflicts(t *testing.T) {
	cl := start(t)
	p := cl.pod(t, "conflict", "app")
	w, writes := newWriter(cl, volstatus.Config{})
	m := mountOf(p, 1)
	w.Applied(m, "AK1:1111111111111111", time.Time{}, "sidecar", time.Now())
	w.Flush(context.Background())
	o, err := get(t, cl, m)
	if err != nil {
		t.Fatal(err)
	}
	o.Status.Fingerprint = "AKX:tampered"
	o.Labels["team"] = "storage"
	if err := cl.c.Update(context.Background(), o, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	w.Applied(m, "AK2:2222222222222222", time.Time{}, "sidecar", time.Now())
	w.Flush(context.Background())
	if n := testutil.ToFloat64(writes.WithLabelValues("error")); n != 0 {
		t.Errorf("%v failed writes", n)
	}
	o = waitFor(t, cl, m, "the plugin's keys", func(o *rekeyv1alpha1.RekeyVolumeStatus) bool { return o.Status.Fingerprint == "AK2:2222222222222222" })
	if o.Labels["team"] != "storage" {
		t.Errorf("labels = %v: the other manager's label is gone", o.Labels)
	}
}

// TestWriterAfterRestart: a new plugin process (a new Writer) keeps what
// the previous one recorded (refusal, resumes) when it writes new keys.
func TestWriterAfterRestart(t *testing.T) {
	cl := start(t)
	p := cl.pod(t, "restart", "app")
	m := mountOf(p, 1)
	w1, _ := newWriter(cl, volstatus.Config{})
	w1.Applied(m, "AK1:1111111111111111", time.Time{}, "csi-publish", time.Now())
	w1.Refused(m, "access denied", "sidecar", time.Now())
	w1.Resumed(m)
	w1.Flush(context.Background())
	w2, _ := newWriter(cl, volstatus.Config{})
	w2.Resumed(m)
	w2.Applied(m, "AK2:2222222222222222", time.Time{}, "sidecar", time.Now())
	w2.Flush(context.Background())
	o, err := get(t, cl, m)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status.Fingerprint != "AK2:2222222222222222" || o.Status.LastRefusal == nil || o.Status.LastRefusal.Reason != "access denied" || o.Status.Resumes != 2 {
		t.Errorf("status after restart = %+v", o.Status)
	}
}

// TestStatusDeletedWithPod runs kube-controller-manager's garbage collector
// against the API server: deleting the pod deletes its statuses.
func TestStatusDeletedWithPod(t *testing.T) {
	cl := start(t)
	kcm := filepath.Join(envtest.Assets(t), "kube-controller-manager")
	if _, err := os.Stat(kcm); err != nil {
		t.Fatalf("kube-controller-manager is not among the envtest binaries (tests/cluster/build.sh builds it): %v", err)
	}
	user, err := cl.env.ControlPlane.AddUser(crenvtest.User{Name: "gc", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kcm, "--kubeconfig="+kc, "--controllers=garbagecollector", "--leader-elect=false",
		"--secure-port=0", "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc, "--v=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("kube-controller-manager:\n%s", out.String())
		}
	})

	p := cl.pod(t, "gc", "app")
	keep := cl.pod(t, "gc", "other")
	w, _ := newWriter(cl, volstatus.Config{})
	m, mk := mountOf(p, 1), mountOf(keep, 1)
	w.Applied(m, "AK1:1111111111111111", time.Time{}, "csi-publish", time.Now())
	w.Applied(mk, "AK1:1111111111111111", time.Time{}, "csi-publish", time.Now())
	w.Flush(context.Background())
	if _, err := get(t, cl, m); err != nil {
		t.Fatal(err)
	}
	if err := cl.c.Delete(context.Background(), p, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := get(t, cl, m)
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the status outlived its pod by 60 s (%v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := get(t, cl, mk); err != nil {
		t.Errorf("the other pod's status: %v", err)
	}
}

// BenchmarkStatusWrites200Mounts measures the API write rate of a node
// whose 200 mounts all rotate at once with the default batching and rate
// limit: each mount sees a refusal, the sidecar's swap and kubelet's
// republish within one window. It reports the writes per mount and per
// second the API server receives.
func BenchmarkStatusWrites200Mounts(b *testing.B) {
	cl := start(b)
	p := cl.pod(b, "bench", "app")
	for b.Loop() {
		w, writes := newWriter(cl, volstatus.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		go w.Run(ctx)
		start := time.Now()
		const mounts = 200
		for i := range mounts {
			m := mountOf(p, i)
			w.Refused(m, "access denied", "sidecar", start)
			w.Applied(m, "AK2:2222222222222222", time.Time{}, "sidecar", start)
			w.Applied(m, "AK2:2222222222222222", time.Time{}, "csi-republish", start)
		}
		for testutil.ToFloat64(writes.WithLabelValues("ok")) < mounts {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		cancel()
		n := testutil.ToFloat64(writes.WithLabelValues("ok"))
		b.ReportMetric(n/mounts, "writes/mount")
		b.ReportMetric(n/took.Seconds(), "writes/s")
		b.ReportMetric(took.Seconds(), "s-to-all-written")
	}
}
