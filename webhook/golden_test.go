package webhook_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rekey.dev/rekey/internal/contract"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.json from the webhook's answers")

// goldenIn is a testdata/<case>.in.json file.
type goldenIn struct {
	// Config overrides fields of webhook.DefaultConfig.
	Config json.RawMessage `json:"config,omitempty"`
	// RequestNamespace is the admission request's namespace when it differs
	// from the pod's.
	RequestNamespace string          `json:"requestNamespace,omitempty"`
	Pod              json.RawMessage `json:"pod"`
}

// goldenOut is a testdata/<case>.out.json file: the webhook's answer and
// the whole pod as the API server stores it after the patch.
type goldenOut struct {
	Patched  bool            `json:"patched"`
	Warnings []string        `json:"warnings"`
	Pod      json.RawMessage `json:"pod"`
}

type goldenCase struct {
	name string
	in   goldenIn
}

func goldenCases(tb testing.TB) []goldenCase {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.in.json"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no golden inputs: %v", err)
	}
	var cases []goldenCase
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		var in goldenIn
		if err := json.Unmarshal(b, &in); err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		cases = append(cases, goldenCase{name: strings.TrimSuffix(filepath.Base(p), ".in.json"), in: in})
	}
	return cases
}

func (c goldenCase) namespace(tb testing.TB) string {
	if c.in.RequestNamespace != "" {
		return c.in.RequestNamespace
	}
	var meta struct {
		Metadata struct{ Namespace string } `json:"metadata"`
	}
	if err := json.Unmarshal(c.in.Pod, &meta); err != nil {
		tb.Fatal(err)
	}
	return meta.Metadata.Namespace
}

// TestGolden admits every testdata/<case>.in.json pod and compares the whole
// stored pod and the warnings with testdata/<case>.out.json.
func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			h := newHandler(t, c.in.Config)
			resp := admit(h, c.namespace(t), c.in.Pod)
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			var pod any
			if err := json.Unmarshal(applyPatches(t, c.in.Pod, resp), &pod); err != nil {
				t.Fatal(err)
			}
			podJSON, err := json.MarshalIndent(pod, "  ", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(goldenOut{
				Patched: len(resp.Patches) > 0, Warnings: append([]string{}, resp.Warnings...), Pod: podJSON,
			}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", c.name+".out.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./webhook -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs; got:\n%s", path, got)
			}
		})
	}
}

// TestIdempotent feeds every mutated golden pod back: the second pass must
// not patch anything.
func TestIdempotent(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			h := newHandler(t, c.in.Config)
			ns := c.namespace(t)
			first := admit(h, ns, c.in.Pod)
			mutated := applyPatches(t, c.in.Pod, first)
			second := admit(h, ns, mutated)
			if len(second.Patches) != 0 {
				t.Errorf("second pass patched: %v", second.Patches)
			}
			if len(first.Patches) > 0 && !bytes.Contains(mutated, []byte(`"`+contract.StatusAnnotation+`":"`+contract.StatusInjected+`"`)) {
				t.Errorf("mutated pod lacks %s", contract.StatusAnnotation)
			}
		})
	}
}
