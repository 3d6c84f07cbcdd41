package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeReady: the readiness probe passes once the supervisor wrote its
// ready file, and until then says why when the supervisor left a reason
// (a takeover that failed), which kubelet shows in the pod's Event.
func TestProbeReady(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "supervisor-ready")
	if err := probeReady(ready); err == nil || !strings.Contains(err.Error(), "not serving yet") {
		t.Errorf("before anything: %v", err)
	}
	why := "supervisor: 1 of 3 mounts not taken over from instance 0123456789abcdef"
	if err := os.WriteFile(ready+errorSuffix, []byte(why+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := probeReady(ready); err == nil || !strings.Contains(err.Error(), why) {
		t.Errorf("after a failed takeover: %v, want the reason", err)
	}
	if err := os.WriteFile(ready, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := probeReady(ready); err != nil {
		t.Errorf("serving: %v", err)
	}
	if err := run([]string{"ready"}); err == nil {
		t.Error("ready without --ready-file passed")
	}
}
