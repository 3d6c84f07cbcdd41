package rekeyctl

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// fixture is one mount in each state.
func fixture() []Mount {
	return []Mount{
		{Namespace: "shop", Pod: "web-0", Volume: "pv-assets", Node: "n1", Secret: "shop/s3-keys", AuthType: "secret",
			Fingerprint: "AKNEW:1111111111111111", SecretNow: "AKNEW:1111111111111111", AppliedAt: now.Add(-90 * time.Second), HasStatus: true},
		{Namespace: "shop", Pod: "web-1", Volume: "pv-assets", Node: "n2", Secret: "shop/s3-keys", AuthType: "secret",
			Fingerprint: "AKOLD:2222222222222222", SecretNow: "AKNEW:1111111111111111", AppliedAt: now.Add(-49 * time.Hour), HasStatus: true,
			LastError: "invalid credentials (host=s3.example.com:443, code=InvalidAccessKeyId): the new key is not active yet at the provider"},
		{Namespace: "shop", Pod: "web-2", Volume: "pv-assets", Node: "n2", Secret: "shop/s3-keys", AuthType: "secret",
			SecretNow: "AKNEW:1111111111111111"},
		{Namespace: "batch", Pod: "etl-7", Volume: "data", Node: "n1", Secret: "batch/keys", AuthType: "secret",
			Fingerprint: "AKB:3333333333333333", AppliedAt: now.Add(-10 * time.Minute), HasStatus: true,
			SecretErr: "read Secret batch/keys in namespace batch: permission denied"},
		{Namespace: "ml", Pod: "train", Volume: "pv-models", Node: "n3", AuthType: "irsa", Role: "arn:aws:iam::123456789012:role/models",
			Fingerprint: "ASIATEMP:4444444444444444", AppliedAt: now.Add(-3 * time.Minute), HasStatus: true},
	}
}

func TestStatesGolden(t *testing.T) {
	var got []string
	for _, m := range fixture() {
		got = append(got, m.Pod+"="+m.State())
	}
	want := []string{"web-0=current", "web-1=stale", "web-2=no-status", "etl-7=unknown", "train=-"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
}

func TestTableGolden(t *testing.T) {
	var all, one bytes.Buffer
	if err := WriteTable(&all, fixture(), true, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "status-all-namespaces.golden", all.Bytes())
	if err := WriteTable(&one, fixture()[:3], false, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "status-namespace.golden", one.Bytes())
	var none bytes.Buffer
	if err := WriteTable(&none, nil, true, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "status-empty.golden", none.Bytes())
}

func TestWaitLinesGolden(t *testing.T) {
	ms := fixture()[:3]
	var out bytes.Buffer
	p := Check("shop/s3-keys", "AKNEW:1111111111111111", ms)
	out.WriteString(p.Line() + "\n")
	ms[1].Fingerprint, ms[1].LastError = "AKNEW:1111111111111111", ""
	out.WriteString(Check("shop/s3-keys", "AKNEW:1111111111111111", ms).Line() + "\n")
	out.WriteString((&NotSafeError{Progress: Check("shop/s3-keys", "AKNEW:1111111111111111", ms), After: 301 * time.Second}).Error() + "\n")
	ms[2].HasStatus, ms[2].Fingerprint = true, "AKNEW:1111111111111111"
	done := Check("shop/s3-keys", "AKNEW:1111111111111111", ms)
	out.WriteString(done.Line() + "\n")
	if !done.Done() || done.Current != 3 || done.Total != 3 {
		t.Errorf("progress = %+v, want 3/3 done", done)
	}
	var many []Mount
	for i := range 8 {
		many = append(many, Mount{Namespace: "big", Pod: "p" + string(rune('a'+i)), Volume: "pv", HasStatus: true, Fingerprint: "AKOLD:2222222222222222"})
	}
	out.WriteString(Check("big/keys", "AKNEW:1111111111111111", many).Line() + "\n")
	golden(t, "wait-lines.golden", out.Bytes())
}
