package fuseserver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rekey.dev/rekey/fuseserver/keycustody"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/fusetest/rekeyfuse"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// mount runs rekey-fuse on a fakes3 bucket with AKINIT keys, which fakes3
// accepts besides its admin keys.
func mount(t *testing.T) (*fakes3.Server, *rekeyfuse.Mount) {
	t.Helper()
	srv := fusetest.StartFake(t)
	initial := fakes3.NewKeys("AKINIT")
	srv.Fake().AddKeys(initial)
	return srv.Fake(), rekeyfuse.Run(t, srv, initial, "")
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
	s3, m := mount(t)
	ctx := context.Background()
	writeAndCheck(t, filepath.Join(m.Dir, "before"), "on the initial keys")

	valid := fakes3.NewKeys("AKVALID")
	s3.AddKeys(valid)
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
		{"identical keys are a no-op", m.Initial, 0, credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED, 0, "", m.Initial},
		{"unknown key refused", unknown, 1, credentialsv1.SwapResult_SWAP_RESULT_REFUSED,
			credentialsv1.SwapReason_SWAP_REASON_INVALID_ACCESS_KEY, "invalid credentials (host=" + s3.Host() + ", code=InvalidAccessKeyId)", m.Initial},
		{"wrong secret refused", badSecret, 1, credentialsv1.SwapResult_SWAP_RESULT_REFUSED,
			credentialsv1.SwapReason_SWAP_REASON_SIGNATURE_MISMATCH, "signature mismatch", m.Initial},
		{"valid key applied", valid, 3, credentialsv1.SwapResult_SWAP_RESULT_APPLIED, 0, "", valid},
		{"replaced keys refused (a replay)", m.Initial, 4, credentialsv1.SwapResult_SWAP_RESULT_STALE, 0, "were replaced", valid},
		{"identical keys again", valid, 3, credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED, 0, "", valid},
	}
	for _, s := range steps {
		resp, err := m.Swap(ctx, s.keys, s.gen)
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
	s3.RevokeKeys(m.Initial)
	writeAndCheck(t, filepath.Join(m.Dir, "after"), "on the swapped keys")
	got, err := os.ReadFile(filepath.Join(m.Dir, "before"))
	if err != nil || string(got) != "on the initial keys" {
		t.Fatalf("old file after swap: %q, %v", got, err)
	}

	st, err := m.Client.Status(ctx, &credentialsv1.StatusRequest{})
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
	s3, m := mount(t)
	duration := 6 * time.Second
	if testing.Short() {
		duration = 2 * time.Second
	}
	rot := &loadcheck.Rotator{Server: s3, Swap: m.SwapApplied, Current: m.Initial}
	st, took := fusetest.RotateUnderLoad(t, rot, 200*time.Millisecond, duration, loadcheck.Load{Dir: m.Dir, Workers: 4, MaxFileSize: 512 << 10, Metadata: true})
	rotations := len(took)
	t.Logf("%d rotations, %d operations, %d failed, %d mismatched bytes, %.1f MiB verified",
		rotations, st.Ops.Load(), st.Failed.Load(), st.Mismatched.Load(), float64(st.Bytes.Load())/(1<<20))
	if st.Failed.Load() != 0 || st.Mismatched.Load() != 0 {
		t.Fatalf("failures under rotation: %d failed, %d mismatched bytes: %q", st.Failed.Load(), st.Mismatched.Load(), st.Errors())
	}
	// Not vacuous: keys rotated many times while every worker completed
	// several verified operations. The counts are low on purpose: under
	// -race on a loaded 2-core machine 6 s hold about 40 operations.
	if rotations < int(duration/(200*time.Millisecond))/3 || st.Ops.Load() < 16 {
		t.Fatalf("too little happened: %d rotations, %d operations", rotations, st.Ops.Load())
	}
}

// TestSecretsNeverLogged swaps valid, refused and malformed keys with a
// known secret and session token and searches every log line for them.
func TestSecretsNeverLogged(t *testing.T) {
	s3, m := mount(t)
	ctx := context.Background()
	const secret = "SeCrEtNeVeRlOgGeD0123456789abcdefghijKLMN"
	const token = "ToKeNnEvErLoGgEd0123456789"
	good := keys.Keys{AccessKeyID: "AKLEAKTEST", SecretAccessKey: secret, SessionToken: token,
		Expiration: time.Now().Add(time.Hour)}
	s3.AddKeys(good)
	refused := keys.Keys{AccessKeyID: "AKNOTONSERVER", SecretAccessKey: secret, SessionToken: token}
	malformed := keys.Keys{AccessKeyID: "AK WITH SPACE", SecretAccessKey: secret}

	var errs []string
	for i, k := range []keys.Keys{good, refused, malformed} {
		resp, err := m.Swap(ctx, k, uint64(i+1))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		errs = append(errs, resp.GetMessage())
	}
	writeAndCheck(t, filepath.Join(m.Dir, "f"), "data")
	// Give the events forwarder a moment to log the outcomes.
	time.Sleep(100 * time.Millisecond)
	out := m.Logs.String() + strings.Join(errs, "\n")
	if !strings.Contains(m.Logs.String(), "AKLEAKTEST") {
		t.Fatalf("log output does not mention the swap at all; the test would prove nothing:\n%s", m.Logs)
	}
	for _, s := range []string{secret, token} {
		if strings.Contains(out, s) {
			t.Fatalf("a secret appears in logs or errors:\n%s", out)
		}
	}
}

// TestKeyCustody: a server started on a custody file that holds newer keys
// (what an earlier server of the mount last used) starts on those, with
// their generation, not on the keys delivered at start; every swap is saved
// there before it is answered.
func TestKeyCustody(t *testing.T) {
	srv := fusetest.StartFake(t)
	initial, newer, newest := fakes3.NewKeys("AKINIT"), fakes3.NewKeys("AKNEWER"), fakes3.NewKeys("AKNEWEST")
	for _, k := range []keys.Keys{initial, newer, newest} {
		srv.Fake().AddKeys(k)
	}
	f, err := keycustody.Create("test")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	store, _, _, err := keycustody.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(keycustody.Record{Keys: newer, Generation: 5}); err != nil {
		t.Fatal(err)
	}
	m := rekeyfuse.RunWith(t, srv, initial, rekeyfuse.Options{KeyCustody: f})
	ctx := context.Background()
	st, err := m.Client.Status(ctx, &credentialsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetFingerprint() != newer.Fingerprint() || st.GetGeneration() != 5 {
		t.Fatalf("started on %s generation %d, want %s generation 5", st.GetFingerprint(), st.GetGeneration(), newer.Fingerprint())
	}
	writeAndCheck(t, filepath.Join(m.Dir, "f"), "on the custody keys")
	if resp, err := m.Swap(ctx, initial, 4); err != nil || resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_STALE {
		t.Fatalf("swap of an older generation = %v, %v; want stale", resp, err)
	}
	if err := m.SwapApplied(ctx, newest, 9); err != nil {
		t.Fatal(err)
	}
	_, rec, ok, err := keycustody.Open(f)
	if err != nil || !ok || !rec.Keys.Equal(newest) || rec.Generation != 9 {
		t.Fatalf("custody after the swap = %s gen %d (%v, %v), want AKNEWEST gen 9", rec.Keys.AccessKeyID, rec.Generation, ok, err)
	}
	if len(rec.Replaced) != 1 || rec.Replaced[0] != newer.Fingerprint() {
		t.Fatalf("custody lists replaced keys %v, want [%s]", rec.Replaced, newer.Fingerprint())
	}

	// A replacement server (a resume starts on the same custody file): a
	// replay of the keys the mount replaced is still refused, even with a
	// generation newer than any it saw.
	m2 := rekeyfuse.RunWith(t, srv, initial, rekeyfuse.Options{KeyCustody: f})
	if resp, err := m2.Swap(ctx, newer, uint64(time.Now().UnixNano())); err != nil || resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_STALE ||
		resp.GetFingerprint() != newest.Fingerprint() {
		t.Fatalf("replay after the restart = %v, %v; want stale on AKNEWEST", resp, err)
	}
}

// stagingCopies counts the staging files (stage-*, without their journal
// records) in dir.
func stagingCopies(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "stage-") && !strings.HasSuffix(e.Name(), ".journal") {
			n++
		}
	}
	return n
}

// TestStopRemovesWriteCache: a clean stop removes the write cache's copies
// of uploaded files from the staging directory (they are in the bucket).
func TestStopRemovesWriteCache(t *testing.T) {
	srv := fusetest.StartFake(t)
	initial := fakes3.NewKeys("AKINIT")
	srv.Fake().AddKeys(initial)
	m := rekeyfuse.Run(t, srv, initial, "")
	for i := range 20 {
		writeAndCheck(t, filepath.Join(m.Dir, fmt.Sprintf("f%d", i)), "data")
	}
	if n := stagingCopies(t, m.StagingDir); n == 0 {
		t.Fatal("the write cache kept no copies while serving; the test would prove nothing")
	}
	if err := m.Stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := stagingCopies(t, m.StagingDir); n != 0 {
		t.Fatalf("%d staging copies left after a clean stop", n)
	}
	if got := srv.MustGet(t, "f19"); string(got) != "data" {
		t.Fatalf("f19 in the bucket: %q", got)
	}
}

// TestExternalUnmount: an unmount from outside ends the server, without
// trying to unmount again.
func TestExternalUnmount(t *testing.T) {
	_, m := mount(t)
	writeAndCheck(t, filepath.Join(m.Dir, "f"), "data")
	if err := syscall.Unmount(m.Dir, 0); err != nil {
		t.Fatal(err)
	}
	err, ok := m.Wait(20 * time.Second)
	if !ok {
		t.Fatal("Run did not return after an unmount from outside")
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs := m.Logs.String()
	if !strings.Contains(logs, "filesystem was unmounted") || strings.Contains(logs, "unmount failed") {
		t.Fatalf("logs:\n%s", logs)
	}
}
