package webhook_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"rekey.dev/rekey/internal/contract"
)

// TestSTSDurationAnnotation admits pods with contract.SidecarSTSDurationAnnotation
// and checks the sidecar's --sts-duration argument and the warnings: values
// outside 15m..12h, fractions of a second and non-durations keep the STS
// default and say why; a pod without rrsa/irsa volumes is told the
// annotation does nothing.
func TestSTSDurationAnnotation(t *testing.T) {
	h := newHandler(t, nil)
	for _, tc := range []struct {
		name, value, claim string
		wantArg            string // "" means no --sts-duration argument
		wantWarning        string // "" means no warning
	}{
		{"lower bound", "15m", "irsa", "--sts-duration=15m0s", ""},
		{"upper bound", "12h", "rrsa", "--sts-duration=12h0m0s", ""},
		{"minutes", "90m", "irsa", "--sts-duration=1h30m0s", ""},
		{"below the minimum", "14m59s", "irsa", "", `="14m59s": outside the 15m to 12h that STS allows; ignored`},
		{"above the maximum", "12h0m1s", "irsa", "", "outside the 15m to 12h that STS allows"},
		{"negative", "-1h", "irsa", "", "outside the 15m to 12h that STS allows"},
		{"fraction of a second", "1h0.5s", "irsa", "", "not whole seconds (STS DurationSeconds)"},
		{"seconds without unit", "3600", "irsa", "", "not a duration such as 1h or 90m"},
		{"empty", "", "irsa", "", "not a duration such as 1h or 90m"},
		{"no token volume", "1h", "data", "", "has no effect: no volume of the pod has authType rrsa or irsa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := corev1.Pod{}
			pod.Name, pod.Namespace = "web", "labeled"
			pod.Annotations = map[string]string{contract.SidecarSTSDurationAnnotation: tc.value}
			pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "registry.example/app:1.0"}}
			pod.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: tc.claim}}}}
			raw, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			resp := admit(h, pod.Namespace, raw)
			var got corev1.Pod
			if err := json.Unmarshal(applyPatches(t, raw, resp), &got); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(got.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == contract.SidecarContainerName })
			if i < 0 {
				t.Fatalf("no sidecar injected; warnings %q", resp.Warnings)
			}
			args := got.Spec.InitContainers[i].Args
			flags := slices.DeleteFunc(slices.Clone(args), func(a string) bool {
				return !strings.HasPrefix(a, "--"+contract.SidecarSTSDurationFlag+"=")
			})
			switch {
			case tc.wantArg == "" && len(flags) > 0:
				t.Errorf("args %q, want no --%s", args, contract.SidecarSTSDurationFlag)
			case tc.wantArg != "" && !slices.Equal(flags, []string{tc.wantArg}):
				t.Errorf("args %q, want %q", args, tc.wantArg)
			}
			warned := slices.ContainsFunc(resp.Warnings, func(w string) bool {
				return strings.HasPrefix(w, "rekey: annotation "+contract.SidecarSTSDurationAnnotation) &&
					strings.Contains(w, tc.wantWarning)
			})
			if tc.wantWarning == "" && len(resp.Warnings) > 0 || tc.wantWarning != "" && !warned {
				t.Errorf("warnings %q, want one containing %q", resp.Warnings, tc.wantWarning)
			}
		})
	}
}
