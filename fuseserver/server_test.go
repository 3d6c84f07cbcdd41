package fuseserver_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"rekey.dev/rekey/fuseserver"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
	"rekey.dev/rekey/internal/logging"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mounted is one in-process FUSE server on a real mount.
type mounted struct {
	s3      *fakes3.Server
	initial keys.Keys
	mnt     string
	client  credentialsv1.CredentialServiceClient
	logs    *syncBuffer
	stopped chan error
}

func mount(t *testing.T) *mounted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	m := &mounted{initial: fakes3.NewKeys("AKINIT"), logs: &syncBuffer{}, stopped: make(chan error, 1)}
	var err error
	if m.s3, err = fakes3.Start(m.initial, "bucket"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.s3.Close() })

	// Socket paths must stay below 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "rkfs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	m.mnt = filepath.Join(dir, "mnt")
	if err := os.Mkdir(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "keys.json")
	var buf bytes.Buffer
	if err := keys.Encode(&buf, m.initial); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fuseserver.DefaultConfig()
	cfg.Endpoint, cfg.Bucket, cfg.MountOptions = m.s3.URL, "bucket", "use_path_request_style"
	cfg.Mountpoint, cfg.StagingDir, cfg.KeysFile = m.mnt, filepath.Join(dir, "staging"), keyFile
	// Run owns (and closes) the ready descriptor, as a child process would:
	// hand it a duplicate so readyW's finalizer cannot close a reused number.
	readyFD, err := syscall.Dup(int(readyW.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	cfg.ControlSocket, cfg.VolumeID, cfg.ReadyFD = filepath.Join(dir, "ctl.sock"), "vol-1", readyFD
	log, err := logging.New(m.logs, "text", 2) // verbose: the leak test wants every line
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { m.stopped <- fuseserver.Run(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-m.stopped:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	ready := make(chan struct{})
	go func() { b := make([]byte, 1); _, _ = readyR.Read(b); close(ready) }()
	select {
	case <-ready:
	case err := <-m.stopped:
		t.Fatalf("Run: %v\n%s", err, m.logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("not ready\n%s", m.logs)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("key file still exists after start: %v", err)
	}
	client, closer, err := control.Dial(cfg.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closer.Close() })
	m.client = client
	return m
}

func (m *mounted) swap(ctx context.Context, k keys.Keys, gen uint64) (*credentialsv1.SwapResponse, error) {
	req := &credentialsv1.SwapRequest{AccessKeyId: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
		SessionToken: k.SessionToken, Source: "test", Generation: gen}
	if !k.Expiration.IsZero() {
		req.Expiration = timestamppb.New(k.Expiration)
	}
	return m.client.Swap(ctx, req)
}

// swapApplied is a loadcheck.SwapFunc.
func (m *mounted) swapApplied(ctx context.Context, k keys.Keys, gen uint64) error {
	resp, err := m.swap(ctx, k, gen)
	if err != nil {
		return err
	}
	if resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		return errors.New(resp.GetResult().String() + ": " + resp.GetMessage())
	}
	return nil
}

func writeAndCheck(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != content {
		t.Fatalf("read %s = %q, %v", path, got, err)
	}
}

func TestSwapOutcomes(t *testing.T) {
	m := mount(t)
	ctx := context.Background()
	writeAndCheck(t, filepath.Join(m.mnt, "before"), "on the initial keys")

	valid := fakes3.NewKeys("AKVALID")
	m.s3.AddKeys(valid)
	unknown := fakes3.NewKeys("AKUNKNOWN")
	badSecret := valid
	badSecret.SecretAccessKey = strings.Repeat("0", 40)

	steps := []struct {
		name        string
		keys        keys.Keys
		gen         uint64
		wantResult  credentialsv1.SwapResult
		wantReason  credentialsv1.SwapReason
		wantMessage string
		wantFP      keys.Keys // keys in use after the step
	}{
		{"identical keys are a no-op", m.initial, 0, credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED, 0, "", m.initial},
		{"unknown key refused", unknown, 1, credentialsv1.SwapResult_SWAP_RESULT_REFUSED,
			credentialsv1.SwapReason_SWAP_REASON_INVALID_ACCESS_KEY, "invalid credentials (host=" + m.s3.Host() + ", code=InvalidAccessKeyId)", m.initial},
		{"wrong secret refused", badSecret, 1, credentialsv1.SwapResult_SWAP_RESULT_REFUSED,
			credentialsv1.SwapReason_SWAP_REASON_SIGNATURE_MISMATCH, "signature mismatch", m.initial},
		{"valid key applied", valid, 3, credentialsv1.SwapResult_SWAP_RESULT_APPLIED, 0, "", valid},
		{"stale generation refused", m.initial, 2, credentialsv1.SwapResult_SWAP_RESULT_STALE, 0, "stale generation 2", valid},
		{"identical keys again", valid, 3, credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED, 0, "", valid},
	}
	for _, s := range steps {
		resp, err := m.swap(ctx, s.keys, s.gen)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if resp.GetResult() != s.wantResult || resp.GetReason() != s.wantReason || !strings.Contains(resp.GetMessage(), s.wantMessage) {
			t.Fatalf("%s: got %v/%v %q", s.name, resp.GetResult(), resp.GetReason(), resp.GetMessage())
		}
		if resp.GetFingerprint() != s.wantFP.Fingerprint() {
			t.Fatalf("%s: fingerprint %s, want %s", s.name, resp.GetFingerprint(), s.wantFP.Fingerprint())
		}
	}

	// The old key is gone from the server; I/O goes on with the new one.
	m.s3.RevokeKeys(m.initial)
	writeAndCheck(t, filepath.Join(m.mnt, "after"), "on the swapped keys")
	got, err := os.ReadFile(filepath.Join(m.mnt, "before"))
	if err != nil || string(got) != "on the initial keys" {
		t.Fatalf("old file after swap: %q, %v", got, err)
	}

	st, err := m.client.Status(ctx, &credentialsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetVolumeId() != "vol-1" || st.GetBucket() != "bucket" || st.GetGeneration() != 3 || st.GetFingerprint() != valid.Fingerprint() {
		t.Fatalf("status = %v", st)
	}
}

// TestRotationUnderLoad rotates every 200 ms, revoking each old key right
// after the swap, while workers write, read back and verify files.
func TestRotationUnderLoad(t *testing.T) {
	m := mount(t)
	duration := 6 * time.Second
	if testing.Short() {
		duration = 2 * time.Second
	}
	var st loadcheck.Stats
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	loadDone := make(chan struct{})
	go func() {
		loadcheck.Load{Dir: m.mnt, Workers: 4, MaxFileSize: 512 << 10}.Run(ctx, &st)
		close(loadDone)
	}()
	rot := &loadcheck.Rotator{Server: m.s3, Swap: m.swapApplied, Current: m.initial}
	rotations := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if _, err := rot.Rotate(context.Background()); err != nil {
				t.Errorf("rotation %d: %v", rotations+1, err)
				continue
			}
			rotations++
		}
	}
	<-loadDone
	t.Logf("%d rotations, %d operations, %d failed, %d mismatched bytes, %.1f MiB verified",
		rotations, st.Ops.Load(), st.Failed.Load(), st.Mismatched.Load(), float64(st.Bytes.Load())/(1<<20))
	if st.Failed.Load() != 0 || st.Mismatched.Load() != 0 {
		t.Fatalf("failures under rotation: %d failed, %d mismatched bytes: %q", st.Failed.Load(), st.Mismatched.Load(), st.Errors())
	}
	if rotations < int(duration/(200*time.Millisecond))/2 || st.Ops.Load() < 50 {
		t.Fatalf("too little happened: %d rotations, %d operations", rotations, st.Ops.Load())
	}
}

// TestSecretsNeverLogged swaps valid, refused and malformed keys with a
// known secret and session token and searches every log line for them.
func TestSecretsNeverLogged(t *testing.T) {
	m := mount(t)
	ctx := context.Background()
	const secret = "SeCrEtNeVeRlOgGeD0123456789abcdefghijKLMN"
	const token = "ToKeNnEvErLoGgEd0123456789"
	good := keys.Keys{AccessKeyID: "AKLEAKTEST", SecretAccessKey: secret, SessionToken: token,
		Expiration: time.Now().Add(time.Hour)}
	m.s3.AddKeys(good)
	refused := keys.Keys{AccessKeyID: "AKNOTONSERVER", SecretAccessKey: secret, SessionToken: token}
	malformed := keys.Keys{AccessKeyID: "AK WITH SPACE", SecretAccessKey: secret}

	var errs []string
	for i, k := range []keys.Keys{good, refused, malformed} {
		resp, err := m.swap(ctx, k, uint64(i+1))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		errs = append(errs, resp.GetMessage())
	}
	writeAndCheck(t, filepath.Join(m.mnt, "f"), "data")
	// Give the events forwarder a moment to log the outcomes.
	time.Sleep(100 * time.Millisecond)
	out := m.logs.String() + strings.Join(errs, "\n")
	if !strings.Contains(m.logs.String(), "AKLEAKTEST") {
		t.Fatalf("log output does not mention the swap at all; the test would prove nothing:\n%s", m.logs)
	}
	for _, s := range []string{secret, token} {
		if strings.Contains(out, s) {
			t.Fatalf("a secret appears in logs or errors:\n%s", out)
		}
	}
}
