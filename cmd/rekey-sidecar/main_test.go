package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRunFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--sources=not json"},
		{"--sources=[]", "--socket-dir=/tmp"},
		{`--sources=[{"volumeId":"v","authType":"nope"}]`},
		{"--sources=[]", "extra"},
	} {
		if err := run(context.Background(), args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// TestRunStopsOnCancel: the signal context ending (SIGTERM) makes run
// return nil promptly.
func TestRunStopsOnCancel(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.Mkdir(secret, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(secret, "akId"), []byte("AK"), 0o600)
	_ = os.WriteFile(filepath.Join(secret, "akSecret"), []byte("SK"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--socket-dir=" + dir, "--health-addr=127.0.0.1:0",
			`--sources=[{"volumeId":"v","authType":"secret","secretDir":"` + secret + `"}]`, "--log-format=json"})
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil on a clean stop", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestListenersOffByDefault: without --health-addr and --metrics-addr the
// sidecar opens no listener (SECURITY.md: metrics and health are opt-in).
func TestListenersOffByDefault(t *testing.T) {
	cfg, _, _, err := parseFlags([]string{"--sources=[]"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HealthAddr != "" || cfg.MetricsAddr != "" {
		t.Fatalf("health %q, metrics %q by default; want both off", cfg.HealthAddr, cfg.MetricsAddr)
	}
}
