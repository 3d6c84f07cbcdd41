package main

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/envtest"
	"rekey.dev/rekey/internal/fusetest"
)

// childArgs, when set, makes the test binary run rekey-controller's main
// with these arguments: TestRunLeaderElection runs each replica as a
// process of its own, as in a cluster.
const childArgs = "REKEY_CONTROLLER_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(childArgs); a != "" {
		os.Args = append([]string{"rekey-controller"}, strings.Split(a, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: []string{"--namespace", "rekey-system"}},
		{args: []string{"--leader-elect=false"}},
		{args: []string{}, wantErr: "--namespace is required"},
		{args: []string{"--namespace", "x", "--threads", "0"}, wantErr: "at least 1"},
		{args: []string{"--namespace", "x", "extra"}, wantErr: "unexpected arguments"},
	} {
		_, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), tc.args)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
}

// TestRunLeaderElection runs two replicas of rekey-controller's run against
// a real kube-apiserver: one takes the Lease and provisions a claim; when
// it stops, it releases the Lease, the other takes over and provisions the
// next claim.
func TestRunLeaderElection(t *testing.T) {
	cfg, env := envtest.Start(t)
	user, err := env.AddUser(crenvtest.User{Name: "admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s3 := fusetest.StartFake(t)
	for _, o := range []func() error{
		func() error {
			_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rekey-system"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().Secrets("rekey-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-keys"},
				StringData: map[string]string{"akId": s3.Admin.AccessKeyID, "akSecret": s3.Admin.SecretAccessKey}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "s3"},
				Provisioner: contract.DriverName, Parameters: map[string]string{"bucket": fusetest.Bucket, "url": s3.URL, "otherOpts": "-o use_path_request_style",
					"csi.storage.k8s.io/provisioner-secret-name": "s3-keys", "csi.storage.k8s.io/provisioner-secret-namespace": "rekey-system"}},
				metav1.CreateOptions{})
			return err
		},
	} {
		if err := o(); err != nil {
			t.Fatal(err)
		}
	}
	type replica struct {
		cmd  *exec.Cmd
		done chan error
	}
	start := func(id string) replica {
		args := []string{"--kubeconfig", kubeconfig, "--namespace", "rekey-system",
			"--identity", id, "--health-addr", "", "--leader-election-lease-duration", "4s", "--leader-election-renew-deadline", "3s",
			"--leader-election-retry-period", "500ms", "--retry-interval-start", "200ms"}
		cmd := exec.Command(os.Args[0], "-test.run", "^$")
		cmd.Env = append(os.Environ(), childArgs+"="+strings.Join(args, "\x1f"))
		if testing.Verbose() {
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := replica{cmd: cmd, done: make(chan error, 1)}
		go func() { r.done <- cmd.Wait() }()
		return r
	}
	replicas := map[string]replica{"a": start("a"), "b": start("b")}
	defer func() {
		for _, r := range replicas {
			_ = r.cmd.Process.Kill()
			if err := <-r.done; err != nil {
				t.Logf("replica stopped: %v", err)
			}
		}
	}()
	holder := func() string {
		l, err := cs.CoordinationV1().Leases("rekey-system").Get(ctx, "rekey-controller", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	provisioned := func(name string) {
		t.Helper()
		class := "s3"
		pvc, err := cs.CoreV1().PersistentVolumeClaims("rekey-system").Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"volume.kubernetes.io/storage-provisioner": contract.DriverName}},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wait(t, "PV of "+name, func() bool {
			_, err := cs.CoreV1().PersistentVolumes().Get(ctx, "pvc-"+string(pvc.UID), metav1.GetOptions{})
			return err == nil
		})
	}
	wait(t, "a leader", func() bool { return holder() != "" })
	first := holder()
	provisioned("one")
	if err := replicas[first].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-replicas[first].done; err != nil {
		t.Fatalf("leader %s stopped with %v", first, err)
	}
	delete(replicas, first)
	wait(t, "the other replica to lead", func() bool { h := holder(); return h != "" && h != first })
	provisioned("two")
}

func wait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
