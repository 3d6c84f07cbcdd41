package csidriver

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/keycustody"
	"rekey.dev/rekey/internal/keys"
)

func TestKeyState(t *testing.T) {
	for _, tc := range []struct {
		inUse, secret string
		keyed         bool
		want          string
	}{
		{"AK:1", "AK:1", true, keyStateCurrent},
		{"AK:1", "AK:2", true, keyStateStale},
		{"", "AK:2", true, keyStateUnknown},
		{"AK:1", "", true, keyStateUnknown},
		{"AK", "AK", false, keyStateUnknown}, // access key IDs alone cannot tell a new secret
	} {
		if got := keyState(tc.inUse, tc.secret, tc.keyed); got != tc.want {
			t.Errorf("keyState(%q, %q, %v) = %s, want %s", tc.inUse, tc.secret, tc.keyed, got, tc.want)
		}
	}
}

// custodyWith makes a real key custody memfd holding k.
func custodyWith(t *testing.T, k keys.Keys) supervisor.Descriptors {
	t.Helper()
	f, err := keycustody.Create("test")
	if err != nil {
		t.Fatal(err)
	}
	st, _, _, err := keycustody.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(keycustody.Record{Keys: k, Generation: 3}); err != nil {
		t.Fatal(err)
	}
	return supervisor.Descriptors{Custody: f}
}

// TestEventFingerprintIsKeyed: the fingerprint an Event carries is keyed
// with the cluster key and computed from the keys in the mount's custody
// file, never the FUSE server's unkeyed one; without custody it is the
// access key ID alone.
func TestEventFingerprintIsKeyed(t *testing.T) {
	ck := bytes.Repeat([]byte{9}, 32)
	k := keys.Keys{AccessKeyID: "AKNEW", SecretAccessKey: "correct-horse", Expiration: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
	v := newVault()
	v.put("m1", custodyWith(t, k))
	defer v.drop("m1")
	ks := newKeyStatus(ck, v, nil, nil, logr.Discard())
	fp, exp := ks.eventFingerprint(supervisor.Event{Kind: "applied", MountID: "m1", Fingerprint: k.Fingerprint()})
	want, _ := k.KeyedFingerprint(ck)
	if fp != want || !exp.Equal(k.Expiration) {
		t.Errorf("eventFingerprint = %s, %s; want %s, %s", fp, exp, want, k.Expiration)
	}
	if fp == k.Fingerprint() {
		t.Error("the Event carries the unkeyed fingerprint")
	}
	fp, _ = ks.eventFingerprint(supervisor.Event{Kind: "applied", MountID: "gone", Fingerprint: k.Fingerprint()})
	if fp != "AKNEW" {
		t.Errorf("without custody: %q, want the access key ID alone", fp)
	}
	if strings.Contains(fp, strings.SplitN(k.Fingerprint(), ":", 2)[1]) {
		t.Error("the unkeyed hash leaked")
	}
	// Without the cluster key (no API access, the Secret unreadable), the
	// access key ID alone even with the keys in custody.
	noKey := newKeyStatus(nil, v, nil, nil, logr.Discard())
	if fp, _ = noKey.eventFingerprint(supervisor.Event{Kind: "applied", MountID: "m1", Fingerprint: k.Fingerprint()}); fp != "AKNEW" {
		t.Errorf("without a cluster key: %q, want the access key ID alone", fp)
	}
}

// TestKeyStateGauge: mounts of one volume are current, stale or unknown
// against the Secret content kubelet passed last.
func TestKeyStateGauge(t *testing.T) {
	ck := bytes.Repeat([]byte{1}, 32)
	old := keys.Keys{AccessKeyID: "AK1", SecretAccessKey: "s1"}
	cur := keys.Keys{AccessKeyID: "AK2", SecretAccessKey: "s2"}
	reg := prometheus.NewRegistry()
	ks := newKeyStatus(ck, newVault(), nil, reg, logr.Discard())
	spec := func(pod string) supervisor.Spec {
		return supervisor.Spec{Target: "/t/" + pod, VolumeID: "pv-1", PodName: pod, PodNamespace: "ns", PodUID: pod, AuthType: "secret"}
	}
	id := func(pod string) string { return supervisor.MountID("/t/" + pod) }
	for _, pod := range []string{"a", "b", "c"} {
		ks.mounted(supervisor.Info{ID: id(pod), Spec: spec(pod)}, old)
		ks.secretSeen(spec(pod), cur) // the Secret was updated; kubelet republished
	}
	ks.applied(supervisor.Event{Kind: "applied", MountID: id("a"), Spec: spec("a")}, ks.fingerprint(cur), time.Time{})
	ks.applied(supervisor.Event{Kind: "applied", MountID: id("b"), Spec: spec("b")}, "", time.Time{})
	for state, want := range map[string]float64{keyStateCurrent: 1, keyStateStale: 1, keyStateUnknown: 1} {
		if got := testutil.ToFloat64(ks.states.WithLabelValues("pv-1", state)); got != want {
			t.Errorf("%s = %v, want %v", state, got, want)
		}
	}
	ks.forget(id("c"))
	if got := testutil.ToFloat64(ks.states.WithLabelValues("pv-1", keyStateStale)); got != 0 {
		t.Errorf("stale after unpublish = %v, want 0", got)
	}
}
