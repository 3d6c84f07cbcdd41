package clusterkey_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"rekey.dev/rekey/internal/clusterkey"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/envtest"
)

// TestEnsureConcurrent: eight node plugins starting at once on a real API
// server end with one key, which Get reads back; the Secret is immutable.
func TestEnsureConcurrent(t *testing.T) {
	cfg, _ := envtest.Start(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rekey-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := clusterkey.Get(ctx, cs, "rekey-system"); err == nil {
		t.Fatal("Get found a key before anyone created it")
	}
	const nodes = 8
	got := make([][]byte, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			k, err := clusterkey.Ensure(ctx, cs, "rekey-system")
			if err != nil {
				t.Error(err)
			}
			got[i] = k
		})
	}
	wg.Wait()
	for i := range nodes {
		if len(got[i]) != clusterkey.Size || !bytes.Equal(got[i], got[0]) {
			t.Fatalf("node %d got a key of %d bytes, different from node 0's", i, len(got[i]))
		}
	}
	k, err := clusterkey.Get(ctx, cs, "rekey-system")
	if err != nil || !bytes.Equal(k, got[0]) {
		t.Fatalf("Get = %x, %v", k, err)
	}
	s, err := cs.CoreV1().Secrets("rekey-system").Get(ctx, contract.FingerprintKeySecret, metav1.GetOptions{})
	if err != nil || s.Immutable == nil || !*s.Immutable {
		t.Errorf("Secret %+v, %v: want immutable", s.Immutable, err)
	}
	// A Secret someone emptied is refused with a clear error, never used.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bad"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("bad").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: contract.FingerprintKeySecret},
		Data: map[string][]byte{contract.FingerprintKeyEntry: []byte("short")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := clusterkey.Ensure(ctx, cs, "bad"); !errors.Is(err, clusterkey.ErrInvalid) {
		t.Errorf("short key: err = %v, want ErrInvalid", err)
	}
}
