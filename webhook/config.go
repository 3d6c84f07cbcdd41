package webhook

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Path is the URL path the webhook server serves pod admission on.
const Path = "/mutate-v1-pod"

// Labels that identify the webhook's own pods, which are never injected.
const (
	SelfLabelKey   = "app.kubernetes.io/name"
	SelfLabelValue = "rekey-webhook"
)

// Config says what the injector injects. The zero value is not useful; start
// from DefaultConfig.
type Config struct {
	// Image is the sidecar image.
	Image string `json:"image,omitempty"`
	// ImagePullPolicy of the sidecar; empty leaves the cluster default.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// NativeSidecar injects an init container with restartPolicy Always
	// (Kubernetes ≥ 1.29); false injects a classic container.
	NativeSidecar bool `json:"nativeSidecar"`
	// UID is the sidecar's user and group ID; it owns the control sockets.
	UID int64 `json:"uid,omitempty"`
	// CPURequest, CPULimit, MemoryRequest and MemoryLimit are the sidecar's
	// default resources; an empty string leaves that value unset. Pod
	// annotations override them.
	CPURequest    string `json:"cpuRequest,omitempty"`
	CPULimit      string `json:"cpuLimit,omitempty"`
	MemoryRequest string `json:"memoryRequest,omitempty"`
	MemoryLimit   string `json:"memoryLimit,omitempty"`
	// TokenExpirationSeconds is the lifetime of projected service-account
	// tokens for rrsa and irsa volumes.
	TokenExpirationSeconds int64 `json:"tokenExpirationSeconds,omitempty"`
}

// DefaultConfig returns the configuration the webhook binary starts from.
func DefaultConfig() Config {
	return Config{
		Image:                  "rekey.dev/rekey-sidecar:latest",
		ImagePullPolicy:        corev1.PullIfNotPresent,
		NativeSidecar:          true,
		UID:                    65532,
		CPURequest:             "10m",
		MemoryRequest:          "16Mi",
		MemoryLimit:            "64Mi",
		TokenExpirationSeconds: 3600,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Image == "" {
		return fmt.Errorf("webhook: sidecar image: %w", errEmpty)
	}
	if c.UID <= 0 {
		return fmt.Errorf("webhook: sidecar uid %d: must be positive", c.UID)
	}
	if c.TokenExpirationSeconds < 600 {
		return fmt.Errorf("webhook: token expiration %ds: must be at least 600", c.TokenExpirationSeconds)
	}
	for name, v := range map[string]string{
		"cpu request": c.CPURequest, "cpu limit": c.CPULimit,
		"memory request": c.MemoryRequest, "memory limit": c.MemoryLimit,
	} {
		if v == "" {
			continue
		}
		if _, err := parseQuantity(v); err != nil {
			return fmt.Errorf("webhook: default %s: %w", name, err)
		}
	}
	return nil
}

// parseQuantity parses a strictly positive resource quantity.
func parseQuantity(s string) (resource.Quantity, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("%q: %w", s, err)
	}
	if q.Sign() <= 0 {
		return resource.Quantity{}, fmt.Errorf("%q: must be positive", s)
	}
	return q, nil
}
