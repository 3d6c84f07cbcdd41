package csidriver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/envtest"
)

// TestEventsOnAPIServer posts the driver's Events through client-go's
// recorder to a real kube-apiserver + etcd (envtest; binaries from
// tests/cluster/build.sh) and reads them back with their exact messages.
// It reads only the Events about its own pod, in a namespace of its own: a
// fresh kube-apiserver posts Events of its own (ClusterIPNotAllocated on the
// kubernetes Service in default while it repairs service IPs).
func TestEventsOnAPIServer(t *testing.T) {
	cfg, _ := envtest.Start(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "events-test"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns.Name).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, stop := NewEventRecorder(cs, "node-1")
	defer stop()
	p := &eventPoster{rec: rec, log: logr.Discard(), metrics: NewMetrics(nil), refreshedEvery: time.Hour}
	spec := supervisor.Spec{VolumeID: "pv-a", PodName: pod.Name, PodNamespace: pod.Namespace, PodUID: string(pod.UID)}
	reason := "invalid credentials (host=oss.example.com:443, code=InvalidAccessKeyId)"
	p.Handle(supervisor.Event{Kind: "refused", Spec: spec, Reason: reason, Source: "secret"})
	p.Handle(supervisor.Event{Kind: "applied", Spec: spec, Fingerprint: "AK1:abcd", Source: "secret"})
	p.Handle(supervisor.Event{Kind: "applied", Spec: spec, Fingerprint: "AK2:abcd", Source: "secret"}) // rate-limited
	p.Handle(supervisor.Event{Kind: supervisor.EventDied, Spec: spec, Reason: "process 42 exited"})
	retained := supervisor.Event{Kind: supervisor.EventStagedDataRetained, Spec: spec, Keys: []string{"a.txt", "dir/b.bin"},
		Reason: "another client changed the object while this data was staged"}
	p.Handle(retained)

	want := map[string]string{
		contract.EventReasonRefreshFailed:  fmt.Sprintf("failed to refresh ak/sk for pv-a, reason: %s", reason),
		contract.EventReasonRefreshed:      "refreshed ak/sk for pv-a, key AK1 (source secret)", // no cluster key: the access key ID only,
		contract.EventReasonFUSEServerDied: fmt.Sprintf(contract.EventMessageFUSEServerDiedFormat, "pv-a", "process 42 exited"),
		contract.EventReasonStagedDataRetained: "data written to pv-a was not uploaded and is kept on the node (2 object(s)): " +
			"another client changed the object while this data was staged; objects: a.txt, dir/b.bin",
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := cs.CoreV1().Events(ns.Name).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.uid", string(pod.UID)).String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]corev1.Event{}
		for _, ev := range list.Items {
			got[ev.Reason] = ev
		}
		done := true
		for reason, msg := range want {
			ev, ok := got[reason]
			if !ok || ev.Message != msg || ev.InvolvedObject.UID != pod.UID {
				done = false
			}
		}
		if done {
			if got[contract.EventReasonRefreshed].Count != 1 {
				t.Errorf("CredentialRefreshed count = %d, want 1 (rate-limited)", got[contract.EventReasonRefreshed].Count)
			}
			if got[contract.EventReasonRefreshFailed].Type != corev1.EventTypeWarning || got[contract.EventReasonFUSEServerDied].Type != corev1.EventTypeWarning ||
				got[contract.EventReasonStagedDataRetained].Type != corev1.EventTypeWarning {
				t.Errorf("failure Events are not Warnings: %+v", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events = %+v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
