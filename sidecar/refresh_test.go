package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	clocktesting "k8s.io/utils/clock/testing"

	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/sts"
)

func TestRefreshAt(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		life, margin, want time.Duration
	}{
		{time.Hour, 5 * time.Minute, 48 * time.Minute},          // 80 % is earlier
		{15 * time.Minute, 5 * time.Minute, 10 * time.Minute},   // expiry - margin is earlier
		{15 * time.Minute, 10 * time.Minute, 450 * time.Second}, // never in the first half
		{12 * time.Hour, 5 * time.Minute, 576 * time.Minute},    // 80 %
		{2 * time.Minute, 5 * time.Minute, time.Minute},         // margin longer than the lifetime
	}
	for _, tt := range tests {
		if got := RefreshAt(t0, t0.Add(tt.life), tt.margin).Sub(t0); got != tt.want {
			t.Errorf("RefreshAt(life %v, margin %v) = +%v, want +%v", tt.life, tt.margin, got, tt.want)
		}
	}
	if got := RefreshAt(t0, time.Time{}, time.Minute).Sub(t0); got != 48*time.Minute {
		t.Errorf("without expiration: +%v", got)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 8 * time.Second}
	for i, want := range []time.Duration{1, 2, 4, 8, 8, 8} {
		d := b.Next()
		if d < want*time.Second/2 || d > want*time.Second {
			t.Errorf("attempt %d: %v, want in [%v, %v]", i, d, want*time.Second/2, want*time.Second)
		}
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Errorf("after Reset: %v", d)
	}
}

// fakeSTS grants keys valid for life from the fake clock's now, or fails
// with err.
type fakeSTS struct {
	clock *clocktesting.FakeClock
	life  time.Duration

	mu     sync.Mutex
	err    error
	calls  int
	tokens []string
}

func (f *fakeSTS) Action() string { return "FakeAssume" }

func (f *fakeSTS) Assume(_ context.Context, token string) (keys.Keys, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.tokens = append(f.tokens, token)
	if f.err != nil {
		return keys.Keys{}, f.err
	}
	return keys.Keys{AccessKeyID: fmt.Sprintf("STS.%d", f.calls), SecretAccessKey: "secret", SessionToken: "tok",
		Expiration: f.clock.Now().Add(f.life)}, nil
}

func (f *fakeSTS) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeSTS) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// refreshHarness runs a Refresher on a fake clock.
type refreshHarness struct {
	t     *testing.T
	clock *clocktesting.FakeClock
	sts   *fakeSTS
	token string
	rec   *secretRecorder
}

func newRefreshHarness(t *testing.T, life time.Duration) *refreshHarness {
	t.Helper()
	fc := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	h := &refreshHarness{t: t, clock: fc, sts: &fakeSTS{clock: fc, life: life},
		token: filepath.Join(t.TempDir(), "token"), rec: newSecretRecorder()}
	h.writeToken("token-1")
	r := &Refresher{Source: "rrsa", TokenFile: h.token, STS: h.sts, Clock: fc, Margin: 5 * time.Minute,
		Backoff: Backoff{Min: 10 * time.Second, Max: time.Minute}, Publish: h.rec.publish, Fail: h.rec.fail, Log: testr.New(t)}
	r.Init()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	return h
}

func (h *refreshHarness) writeToken(s string) {
	if err := os.WriteFile(h.token, []byte(s+"\n"), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// waitTimer waits until the refresher sleeps on the fake clock.
func (h *refreshHarness) waitTimer() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !h.clock.HasWaiters() {
		if time.Now().After(deadline) {
			h.t.Fatal("refresher never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

// advance moves the fake clock by d in steps, letting the refresher act at
// each step.
func (h *refreshHarness) advance(d, step time.Duration) {
	h.t.Helper()
	for done := time.Duration(0); done < d; done += step {
		h.waitTimer()
		h.clock.Step(min(step, d-done))
	}
	h.waitTimer()
}

func TestRefresherExpiryDriven(t *testing.T) {
	h := newRefreshHarness(t, time.Hour)
	h.rec.waitFor(t, "first keys", func(p []keys.Keys, _ []string) bool { return len(p) == 1 })

	// Refresh is due at 80 % of the hour (48 min) minus up to 5 % jitter.
	h.advance(45*time.Minute, time.Minute)
	if n := h.sts.callCount(); n != 1 {
		t.Fatalf("refreshed too early: %d STS calls after 45 min", n)
	}
	h.writeToken("token-2") // kubelet rotated the token meanwhile
	h.advance(3*time.Minute, 10*time.Second)
	h.rec.waitFor(t, "refreshed keys", func(p []keys.Keys, _ []string) bool { return len(p) == 2 })
	if h.sts.tokens[1] != "token-2" {
		t.Errorf("refresh sent %q, want the re-read token", h.sts.tokens[1])
	}
	if _, f := h.rec.snapshot(); len(f) != 0 {
		t.Errorf("failures: %q", f)
	}
}

func TestRefresherOutageAcrossExpiry(t *testing.T) {
	h := newRefreshHarness(t, time.Hour)
	h.rec.waitFor(t, "first keys", func(p []keys.Keys, _ []string) bool { return len(p) == 1 })
	first, _ := h.rec.snapshot()
	expiry := first[0].Expiration

	// STS goes down before the refresh is due and stays down past expiry.
	h.sts.setErr(&sts.Error{Action: "FakeAssume", StatusCode: 503, Code: "ServiceUnavailable"})
	h.advance(expiry.Sub(h.clock.Now())-time.Second, 5*time.Second)
	p, f := h.rec.snapshot()
	if len(p) != 1 || len(f) != 0 {
		t.Fatalf("before expiry: %d publishes, failures %q; want the old keys kept and nothing reported", len(p), f)
	}
	if n := h.sts.callCount(); n < 5 {
		t.Errorf("only %d STS attempts during a 12-minute outage", n)
	}

	h.advance(2*time.Second, time.Second)
	h.rec.waitFor(t, "the expiry report", func(_ []keys.Keys, f []string) bool { return len(f) == 1 })
	_, f = h.rec.snapshot()
	if !strings.Contains(f[0], "expired at "+expiry.Format(time.RFC3339)) || !strings.Contains(f[0], "ServiceUnavailable") {
		t.Errorf("report = %q", f[0])
	}
	// The outage goes on: no report storm.
	h.advance(10*time.Minute, 10*time.Second)
	if _, f := h.rec.snapshot(); len(f) != 1 {
		t.Errorf("%d reports during one outage: %q", len(f), f)
	}

	// STS is back: new keys within one backoff.
	h.sts.setErr(nil)
	h.advance(time.Minute, 10*time.Second)
	h.rec.waitFor(t, "recovered keys", func(p []keys.Keys, _ []string) bool { return len(p) == 2 })
	p, _ = h.rec.snapshot()
	if p[1].Expiration.Before(h.clock.Now()) || p[1].AccessKeyID == p[0].AccessKeyID {
		t.Errorf("recovered keys %s expire %v", p[1], p[1].Expiration)
	}
}

func TestRefresherRefusedTokenReportedAtOnce(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Now())
	fake := &fakeSTS{clock: fc, life: time.Hour, err: &sts.Error{Action: "FakeAssume", StatusCode: 400, Code: "AuthenticationFail.OIDCToken.Invalid"}}
	rec := newSecretRecorder()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Refresher{Source: "rrsa", TokenFile: tok, STS: fake, Clock: fc, Margin: time.Minute,
		Backoff: Backoff{Min: time.Second, Max: time.Second}, Publish: rec.publish, Fail: rec.fail, Log: testr.New(t)}
	r.Init()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Start(ctx) }()
	rec.waitFor(t, "a report", func(_ []keys.Keys, f []string) bool { return len(f) == 1 })
	_, f := rec.snapshot()
	if !strings.Contains(f[0], "AuthenticationFail.OIDCToken.Invalid") {
		t.Errorf("report = %q", f[0])
	}

	// A new token is tried at once and works.
	fake.setErr(nil)
	r.TokenChanged()
	rec.waitFor(t, "keys after the token changed", func(p []keys.Keys, _ []string) bool { return len(p) == 1 })

	// A missing token file is reported too, without its content.
	if _, err := readToken(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, errToken) {
		t.Errorf("readToken of a missing file: %v", err)
	}
}
