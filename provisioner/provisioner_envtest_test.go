package provisioner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	"rekey.dev/rekey/csidriver"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/envtest"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
)

// annStorageProvisioner is what kube-controller-manager's PV controller
// sets on a claim of an external provisioner's class; envtest runs no
// controller-manager, so the test sets it.
const annStorageProvisioner = "volume.kubernetes.io/storage-provisioner"

// cluster is a kube-apiserver with rekey-controller's RBAC, an S3 server,
// and the provision controller running as the restricted user.
type cluster struct {
	admin kubernetes.Interface
	s3    *fusetest.Server
}

// startCluster starts envtest, grants the user "rekey-controller" the
// permissions of charts/rekey's controller ClusterRole (Secrets only in
// namespace "team"), and runs the provisioner as that user against the
// in-process S3 server.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	cfg, env := envtest.Start(t)
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []string{"team", "other"} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, func() error {
		_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "rekey-controller"},
			Rules: ClusterRules()}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "rekey-controller"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "rekey-controller"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "rekey-controller", APIGroup: "rbac.authorization.k8s.io"}}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.RbacV1().Roles("team").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "rekey-controller-secrets"},
			Rules: SecretRules()}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.RbacV1().RoleBindings("team").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "rekey-controller-secrets"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "rekey-controller-secrets"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "rekey-controller", APIGroup: "rbac.authorization.k8s.io"}}}, metav1.CreateOptions{})
		return err
	})
	user, err := env.ControlPlane.AddUser(crenvtest.User{Name: "rekey-controller"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	restricted, err := kubernetes.NewForConfig(user.Config())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{admin: admin, s3: fusetest.StartFake(t)}
	ctx, cancel := context.WithCancel(ctx)
	rec, stop := csidriver.NewEventRecorder(restricted, "rekey-controller")
	p := New(restricted, csidriver.NewControllerServer(csidriver.ControllerOptions{Log: logr.Discard()}), rec, logr.Discard())
	pc := NewController(ctx, restricted, p, Options{RetryIntervalStart: 200 * time.Millisecond, RetryIntervalMax: 2 * time.Second})
	done := make(chan struct{})
	go func() { defer close(done); pc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; stop() })
	return c
}

func mustCreate(t testing.TB, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) secret(t testing.TB, ns, name string, k keys.Keys) {
	t.Helper()
	mustCreate(t, func() error {
		_, err := c.admin.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			StringData: map[string]string{"akId": k.AccessKeyID, "akSecret": k.SecretAccessKey}}, metav1.CreateOptions{})
		return err
	})
}

func (c *cluster) class(t testing.TB, name string, reclaim corev1.PersistentVolumeReclaimPolicy, params map[string]string) {
	t.Helper()
	mustCreate(t, func() error {
		_, err := c.admin.StorageV1().StorageClasses().Create(context.Background(), &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name},
			Provisioner: contract.DriverName, Parameters: params, ReclaimPolicy: &reclaim}, metav1.CreateOptions{})
		return err
	})
}

func (c *cluster) claim(t testing.TB, ns, name, class string, ann map[string]string) *corev1.PersistentVolumeClaim {
	t.Helper()
	a := map[string]string{annStorageProvisioner: contract.DriverName}
	for k, v := range ann {
		a[k] = v
	}
	pvc, err := c.admin.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: a},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pvc
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) waitPV(t testing.TB, pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolume {
	t.Helper()
	var pv *corev1.PersistentVolume
	waitFor(t, "the PV of "+pvc.Name, func() bool {
		var err error
		pv, err = c.admin.CoreV1().PersistentVolumes().Get(context.Background(), "pvc-"+string(pvc.UID), metav1.GetOptions{})
		return err == nil
	})
	return pv
}

// waitEvent waits for a ProvisioningFailed Event on the claim whose
// message holds want, and returns it.
func (c *cluster) waitEvent(t testing.TB, pvc *corev1.PersistentVolumeClaim, want string) string {
	t.Helper()
	var msg, last string
	sel := fields.OneTermEqualSelector("involvedObject.uid", string(pvc.UID)).String()
	deadline := time.Now().Add(60 * time.Second)
	for msg == "" {
		evs, err := c.admin.CoreV1().Events(pvc.Namespace).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == "ProvisioningFailed" {
				last = e.Message
				if strings.Contains(e.Message, want) {
					msg = e.Message
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ProvisioningFailed Event on %s containing %q; last: %q", pvc.Name, want, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return msg
}

// waitDeleted waits until the library deleted the PV object, which it does
// only after Provisioner.Delete succeeded. envtest runs no pv-protection
// controller, so the object stays with a deletion timestamp.
func (c *cluster) waitDeleted(t testing.TB, pv *corev1.PersistentVolume) {
	t.Helper()
	waitFor(t, "PV "+pv.Name+" to be deleted", func() bool {
		cur, err := c.admin.CoreV1().PersistentVolumes().Get(context.Background(), pv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && cur.DeletionTimestamp != nil)
	})
}

// release does what kube-controller-manager does when a bound claim is
// deleted: the PV becomes Released.
func (c *cluster) release(t testing.TB, pv *corev1.PersistentVolume) {
	t.Helper()
	ctx := context.Background()
	// The provisioner's controller may update the PV at the same time
	// (its annotations, finalizers): read and write again on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.admin.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.Phase = corev1.VolumeReleased
		_, err = c.admin.CoreV1().PersistentVolumes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestProvisionerOnAPIServer provisions claims through the library's
// controller, rekey's provisioner and Controller service, as a user with
// only the chart's permissions, against a real kube-apiserver and S3 server.
func TestProvisionerOnAPIServer(t *testing.T) {
	c := startCluster(t)
	c.secret(t, "team", "s3-keys", c.s3.Admin)
	c.secret(t, "team", "app-keys", c.s3.Admin)
	c.secret(t, "team", "bad-keys", keys.Keys{AccessKeyID: c.s3.Admin.AccessKeyID, SecretAccessKey: "not-the-secret-0123456789"})
	c.secret(t, "other", "s3-keys", c.s3.Admin)
	base := func(kv ...string) map[string]string {
		m := map[string]string{"url": c.s3.URL, "otherOpts": "-o use_path_request_style",
			"csi.storage.k8s.io/provisioner-secret-name": "s3-keys", "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
			"csi.storage.k8s.io/node-publish-secret-name": "${pvc.annotations['example.com/keys']}", "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	c.class(t, "prefix", corev1.PersistentVolumeReclaimDelete, base("bucket", fusetest.Bucket, "pathPattern", "${pvc.namespace}/${pvc.name}", "mounter", "geesefs"))
	c.class(t, "retain", corev1.PersistentVolumeReclaimRetain, base("bucket", fusetest.Bucket))
	c.class(t, "bucket", corev1.PersistentVolumeReclaimDelete, base())
	c.class(t, "badtmpl", corev1.PersistentVolumeReclaimDelete, base("bucket", fusetest.Bucket, "csi.storage.k8s.io/provisioner-secret-name", "${pvc.uid}"))
	c.class(t, "missing", corev1.PersistentVolumeReclaimDelete, base("bucket", fusetest.Bucket, "csi.storage.k8s.io/provisioner-secret-name", "nope"))
	c.class(t, "badkeys", corev1.PersistentVolumeReclaimDelete, base("bucket", fusetest.Bucket, "csi.storage.k8s.io/provisioner-secret-name", "bad-keys"))
	c.class(t, "forbidden", corev1.PersistentVolumeReclaimDelete, base("bucket", fusetest.Bucket, "csi.storage.k8s.io/provisioner-secret-namespace", "other"))
	keysAnn := map[string]string{"example.com/keys": "app-keys"}
	ctx := context.Background()

	t.Run("prefix mode, Delete", func(t *testing.T) {
		pvc := c.claim(t, "team", "data", "prefix", keysAnn)
		pv := c.waitPV(t, pvc)
		csi := pv.Spec.CSI
		if csi.Driver != contract.DriverName || csi.NodePublishSecretRef == nil || *csi.NodePublishSecretRef != (corev1.SecretReference{Name: "app-keys", Namespace: "team"}) {
			t.Errorf("csi source = %+v", csi)
		}
		if a := csi.VolumeAttributes; a["bucket"] != fusetest.Bucket || a["path"] != "team/data" || a["url"] != c.s3.URL {
			t.Errorf("attributes = %v", a)
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID ||
			pv.Spec.Capacity.Storage().String() != "1Gi" || pv.Spec.StorageClassName != "prefix" {
			t.Errorf("PV spec = %+v", pv.Spec)
		}
		if pv.Annotations[AnnDeletionSecretName] != "s3-keys" || pv.Annotations[AnnDeletionSecretNamespace] != "team" {
			t.Errorf("annotations = %v", pv.Annotations)
		}
		waitIgnored(t, c, pvc)
		c.s3.Put(t, "team/data/file", []byte("x"))
		c.s3.Put(t, "team/data-other/file", []byte("kept"))
		if err := c.admin.CoreV1().PersistentVolumeClaims("team").Delete(ctx, pvc.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		c.release(t, pv)
		c.waitDeleted(t, pv)
		if left := c.s3.Keys(t, "team/data/"); len(left) != 0 {
			t.Errorf("left under the prefix: %v", left)
		}
		c.s3.MustGet(t, "team/data-other/file")
	})

	t.Run("Retain keeps the prefix; bucket mode deletes its bucket", func(t *testing.T) {
		kept := c.claim(t, "team", "kept", "retain", keysAnn)
		own := c.claim(t, "team", "own", "bucket", keysAnn)
		keptPV, ownPV := c.waitPV(t, kept), c.waitPV(t, own)
		prefix := keptPV.Spec.CSI.VolumeAttributes["path"]
		if prefix != keptPV.Name || keptPV.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
			t.Fatalf("retained PV: path %q, policy %s", prefix, keptPV.Spec.PersistentVolumeReclaimPolicy)
		}
		bucket := ownPV.Spec.CSI.VolumeAttributes["bucket"]
		if bucket != ownPV.Name || ownPV.Spec.CSI.VolumeAttributes["path"] != "" {
			t.Fatalf("bucket PV attributes = %v", ownPV.Spec.CSI.VolumeAttributes)
		}
		c.s3.Put(t, prefix+"/file", []byte("kept"))
		c.release(t, keptPV)
		c.release(t, ownPV)
		c.waitDeleted(t, ownPV)
		if _, err := c.s3.Client(c.s3.Admin).ListObjectsV2(ctx, listIn(bucket)); err == nil {
			t.Errorf("bucket %s still exists", bucket)
		}
		if cur, err := c.admin.CoreV1().PersistentVolumes().Get(ctx, keptPV.Name, metav1.GetOptions{}); err != nil || cur.DeletionTimestamp != nil {
			t.Errorf("retained PV: %v, deleted %v", err, cur.DeletionTimestamp)
		}
		c.s3.MustGet(t, prefix+"/file")
	})

	t.Run("errors become ProvisioningFailed Events", func(t *testing.T) {
		for _, tc := range []struct{ class, want string }{
			{"badtmpl", "invalid template"},
			{"missing", "provisioner Secret team/nope not found"},
			{"badkeys", "secret key mismatch"},
			{"forbidden", "may not read provisioner Secret other/s3-keys (forbidden)"},
		} {
			pvc := c.claim(t, "team", "claim-"+tc.class, tc.class, keysAnn)
			msg := c.waitEvent(t, pvc, tc.want)
			if strings.Contains(msg, "not-the-secret") || strings.Contains(msg, c.s3.Admin.SecretAccessKey) {
				t.Errorf("Event quotes a secret: %s", msg)
			}
		}
		// A bucket-mode claim whose bucket name is taken: the claim is
		// created without the provisioner annotation, its PV's bucket name
		// is created in S3, then the claim is handed to the provisioner.
		pvc, err := c.admin.CoreV1().PersistentVolumeClaims("team").Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "taken", Annotations: keysAnn},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptrTo("bucket"), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.s3.Client(c.s3.Admin).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("pvc-" + string(pvc.UID))}); err != nil {
			t.Fatal(err)
		}
		pvc.Annotations[annStorageProvisioner] = contract.DriverName
		if pvc, err = c.admin.CoreV1().PersistentVolumeClaims("team").Update(ctx, pvc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.waitEvent(t, pvc, "bucket name collision")
	})
}

func ptrTo[T any](v T) *T { return &v }

func listIn(bucket string) *s3.ListObjectsV2Input {
	return &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}
}

func waitIgnored(t *testing.T, c *cluster, pvc *corev1.PersistentVolumeClaim) {
	t.Helper()
	sel := fields.OneTermEqualSelector("involvedObject.uid", string(pvc.UID)).String()
	waitFor(t, "a ParameterIgnored Event about mounter", func() bool {
		evs, err := c.admin.CoreV1().Events(pvc.Namespace).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == EventReasonParameterIgnored && strings.Contains(e.Message, "mounter is ignored") {
				return true
			}
		}
		return false
	})
}
