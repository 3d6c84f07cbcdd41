package webhook

import (
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"rekey.dev/rekey/internal/contract"
)

// The lifetimes a pod may ask for with contract.SidecarSTSDurationAnnotation:
// the DurationSeconds range that both AssumeRoleWithWebIdentity (AWS STS,
// irsa) and AssumeRoleWithOIDC (Alibaba Cloud STS, rrsa) accept. A role's own
// maximum session duration may be lower; STS then refuses the exchange and
// the sidecar reports it.
const (
	MinSTSDuration = 15 * time.Minute
	MaxSTSDuration = 12 * time.Hour
)

// stsDurationArgs answers the sidecar arguments that carry the pod's
// contract.SidecarSTSDurationAnnotation: none when the pod sets none, and
// none plus a warning when the value is not allowed or no source exchanges a
// token (the STS default applies).
func stsDurationArgs(annotations map[string]string, sources []contract.Source) ([]string, admission.Warnings) {
	v, ok := annotations[contract.SidecarSTSDurationAnnotation]
	if !ok {
		return nil, nil
	}
	d, err := parseSTSDuration(v)
	if err != nil {
		return nil, admission.Warnings{fmt.Sprintf("rekey: annotation %s=%q: %v; ignored, the STS default applies",
			contract.SidecarSTSDurationAnnotation, v, err)}
	}
	for _, s := range sources {
		if s.AuthType == contract.AuthTypeRRSA || s.AuthType == contract.AuthTypeIRSA {
			return []string{"--" + contract.SidecarSTSDurationFlag + "=" + d.String()}, nil
		}
	}
	return nil, admission.Warnings{fmt.Sprintf("rekey: annotation %s has no effect: no volume of the pod has authType %s or %s",
		contract.SidecarSTSDurationAnnotation, contract.AuthTypeRRSA, contract.AuthTypeIRSA)}
}

// parseSTSDuration accepts a Go duration of whole seconds from
// MinSTSDuration to MaxSTSDuration.
func parseSTSDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("not a duration such as 1h or 90m: %w", err)
	case d < MinSTSDuration || d > MaxSTSDuration:
		return 0, fmt.Errorf("outside the %gm to %gh that STS allows", MinSTSDuration.Minutes(), MaxSTSDuration.Hours())
	case d%time.Second != 0:
		return 0, errors.New("not whole seconds (STS DurationSeconds)")
	}
	return d, nil
}
