package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/atomicwriter"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/logging"
	"rekey.dev/rekey/internal/sts/ststest"
)

// fakeBucket stands in for S3 behind a rotation.Manager: it accepts the keys
// whose access key IDs it was told about.
type fakeBucket struct {
	mu    sync.Mutex
	valid map[string]bool
	// check, if set, decides instead (the MinIO test asks MinIO).
	check func(context.Context, keys.Keys) error
}

func newFakeBucket(ids ...string) *fakeBucket {
	b := &fakeBucket{valid: map[string]bool{}}
	b.allow(ids...)
	return b
}

func (b *fakeBucket) allow(ids ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		b.valid[id] = true
	}
}

func (b *fakeBucket) Validate(ctx context.Context, k keys.Keys) error {
	if b.check != nil {
		if err := b.check(ctx, k); err != nil {
			return &rotation.RefusalError{Reason: rotation.ReasonAccessDenied, Message: "refused by the bucket"}
		}
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.valid[k.AccessKeyID] && !strings.HasPrefix(k.AccessKeyID, "STS.") {
		return &rotation.RefusalError{Reason: rotation.ReasonInvalidAccessKey, Message: "invalid credentials (host=fake, code=InvalidAccessKeyId)"}
	}
	return nil
}

func (b *fakeBucket) Apply(keys.Keys, rotation.Ledger) {}

// fakeServer is a FUSE server's control API without the filesystem: a real
// control.Server around a real rotation.Manager.
type fakeServer struct {
	m    *rotation.Manager
	stop func()
}

func startFakeServer(t *testing.T, sock, volID string, initial keys.Keys, b *fakeBucket, pid int) *fakeServer {
	t.Helper()
	m := rotation.New(rotation.Identity{VolumeID: volID, Bucket: "b", AuthType: contract.AuthTypeSecret}, initial, b, b, rotation.Options{})
	lis, err := control.Listen(control.ListenOptions{Path: sock, AllowedUIDs: []uint32{uint32(os.Getuid())}})
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(m, control.Options{PID: pid})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, lis)
	}()
	var once sync.Once
	fs := &fakeServer{m: m, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(fs.stop)
	return fs
}

// nextEvent returns the server's next event of one of kinds.
func (s *fakeServer) nextEvent(t *testing.T, kinds ...rotation.EventKind) rotation.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-s.m.Events():
			for _, k := range kinds {
				if ev.Kind == k {
					return ev
				}
			}
		case <-timeout:
			t.Fatalf("no %v event", kinds)
		}
	}
}

// shortDir returns a directory short enough for unix socket paths.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "rk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// runSidecar runs Run with fast test timings and returns a channel of its
// swap events and its health socket.
func runSidecar(t *testing.T, cfg Config) (<-chan SwapEvent, string) {
	if cfg.ServerUIDs == nil {
		cfg.ServerUIDs = []uint32{uint32(os.Getuid())} // the test's servers run in this process
	}
	t.Helper()
	events := make(chan SwapEvent, 1000)
	health := filepath.Join(cfg.SocketDir, "health.sk") // not *.sock: not a FUSE server
	cfg.HealthAddr, cfg.MetricsAddr = "unix:"+health, "unix:"+health
	cfg.Log = testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	cfg.Debounce = 5 * time.Millisecond
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	cfg.OnSwap = func(e SwapEvent) { events <- e }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return events, health
}

func httpGet(t *testing.T, sock, path string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://sidecar" + path)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, health string, want bool) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, health, "/readyz")
		if (code == 200) == want && code != 0 {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz = %d %q, want ready=%v", code, body, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nextSwap(t *testing.T, events <-chan SwapEvent) SwapEvent {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no swap")
	}
	return SwapEvent{}
}

func TestRunSecretToServer(t *testing.T) {
	sockDir := shortDir(t)
	secretDir := t.TempDir()
	w, _ := atomicwriter.New(secretDir)
	k1 := keys.Keys{AccessKeyID: "AK1", SecretAccessKey: "S1"}
	if err := w.WriteStrings(pair("AK1", "S1")); err != nil {
		t.Fatal(err)
	}
	bucket := newFakeBucket("AK1", "AK2")
	events, health := runSidecar(t, Config{SocketDir: sockDir,
		Sources: []contract.Source{{VolumeID: "vol-1", AuthType: contract.AuthTypeSecret, SecretDir: secretDir}}})

	// The socket appears after the sidecar started. Until the sidecar read
	// the Secret, readyz says "no keys yet"; then it waits for the socket.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		body := waitReady(t, health, false)
		if strings.Contains(body, "no FUSE server socket") {
			break
		}
		if !strings.Contains(body, "no keys yet") || time.Now().After(deadline) {
			t.Fatalf("readyz before the server = %q", body)
		}
	}
	sock := filepath.Join(sockDir, "vol-1.sock")
	srv := startFakeServer(t, sock, "vol-1", k1, bucket, 1001)
	waitReady(t, health, true) // same keys as the server's initial ones: nothing to push

	// A rotation.
	if err := w.WriteStrings(pair("AK2", "S2")); err != nil {
		t.Fatal(err)
	}
	ev := nextSwap(t, events)
	if ev.Result != "applied" || !strings.HasPrefix(ev.Fingerprint, "AK2:") || ev.VolumeID != "vol-1" {
		t.Fatalf("swap = %+v", ev)
	}
	if got := srv.m.Status().Fingerprint; got != ev.Fingerprint {
		t.Errorf("server runs %s", got)
	}
	waitReady(t, health, true)

	// The node plugin's republish puts newer keys in place before the
	// projected Secret catches up: the sidecar's push of the keys they
	// replaced is answered stale, once, and nothing rolls back.
	bucket.allow("AK5")
	k5 := keys.Keys{AccessKeyID: "AK5", SecretAccessKey: "S5"}
	if out := srv.m.Swap(context.Background(), rotation.Request{Keys: k5, Source: "republish", Generation: uint64(time.Now().UnixNano())}); out.Result != rotation.ResultApplied {
		t.Fatalf("republish swap = %+v", out)
	}
	if ev := nextSwap(t, events); ev.Result != "stale" || !strings.HasPrefix(ev.Fingerprint, "AK2:") {
		t.Fatalf("sidecar's push after the republish = %+v, want AK2 answered stale", ev)
	}
	if got := srv.m.Status().Fingerprint; got != k5.Fingerprint() {
		t.Fatalf("server runs %s after the republish, want %s", got, k5.Fingerprint())
	}
	waitReady(t, health, true)
	// The projected Secret catches up: same keys, nothing changes.
	if err := w.WriteStrings(pair("AK5", "S5")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, m := httpGet(t, health, "/metrics")
		if strings.Contains(m, `rekey_sidecar_refreshes_total{result="success",source="secret"} 3`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sidecar did not read the caught-up Secret")
		}
	}
	select {
	case e := <-events:
		t.Fatalf("keys the server already runs were pushed: %+v", e)
	default:
	}
	waitReady(t, health, true)

	// Keys the bucket refuses: logged, old keys stay, not retried.
	if err := w.WriteStrings(pair("AK3", "S3")); err != nil {
		t.Fatal(err)
	}
	ev = nextSwap(t, events)
	if ev.Result != "refused" || ev.Reason != "invalid credentials" {
		t.Fatalf("swap = %+v", ev)
	}
	if !strings.HasPrefix(srv.m.Status().Fingerprint, "AK5:") {
		t.Errorf("refused keys in use")
	}
	if body := waitReady(t, health, false); !strings.Contains(body, "does not run the newest keys") {
		t.Errorf("readyz = %q", body)
	}
	// That refused keys are not pushed again is decidePush's rule
	// (TestDecidePush), not something a sleep here could show.

	// The FUSE server restarts (new pid, its mount-time keys); meanwhile the
	// bucket learned AK3. The sidecar pushes AK3 again.
	bucket.allow("AK3")
	srv.stop()
	srv = startFakeServer(t, sock, "vol-1", k1, bucket, 1002)
	ev = nextSwap(t, events)
	if ev.Result != "applied" || !strings.HasPrefix(ev.Fingerprint, "AK3:") {
		t.Fatalf("swap after restart = %+v", ev)
	}
	waitReady(t, health, true)

	// An incomplete Secret: reported through the server, not pushed.
	if err := w.WriteStrings(map[string]string{"akId": "AK4"}); err != nil {
		t.Fatal(err)
	}
	rep := srv.nextEvent(t, rotation.EventReported)
	if rep.Source != "secret" || !strings.Contains(rep.Reason, "secret access key is empty") {
		t.Errorf("report = %+v", rep)
	}
	if !strings.HasPrefix(srv.m.Status().Fingerprint, "AK3:") {
		t.Errorf("server keys changed after an incomplete secret")
	}

	code, metrics := httpGet(t, health, "/metrics")
	for _, want := range []string{`rekey_sidecar_swaps_total{result="applied"} 2`, `rekey_sidecar_swaps_total{result="refused"} 1`,
		`rekey_sidecar_refreshes_total{result="failure",source="secret"} 1`} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, "S3") && strings.Contains(metrics, "\"S3\"") {
		t.Errorf("metrics mention a secret")
	}
}

func TestRunSTSToServer(t *testing.T) {
	sockDir := shortDir(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	srvSTS := ststest.Alibaba(t, func(w http.ResponseWriter, _ url.Values) {
		_, _ = io.WriteString(w, `{"RequestId":"r","Credentials":{"SecurityToken":"tok","Expiration":"`+exp.Format(time.RFC3339)+
			`","AccessKeySecret":"sk","AccessKeyId":"STS.one"}}`)
	})
	tokenDir := t.TempDir()
	aw, _ := atomicwriter.New(tokenDir)
	if err := aw.WriteStrings(map[string]string{contract.SidecarTokenFile: ststest.FakeToken}); err != nil {
		t.Fatal(err)
	}
	bucket := newFakeBucket("AK0")
	srv := startFakeServer(t, filepath.Join(sockDir, "v.sock"), "csi-inline", keys.Keys{AccessKeyID: "AK0", SecretAccessKey: "S0"}, bucket, 7)
	_ = srv
	events, health := runSidecar(t, Config{SocketDir: sockDir, PodUID: "uid-1",
		Sources: []contract.Source{{VolumeID: "csi-inline", AuthType: contract.AuthTypeRRSA, TokenFile: filepath.Join(tokenDir, contract.SidecarTokenFile),
			RoleARN: "acs:ram::1:role/r", OIDCProviderARN: "acs:ram::1:oidc-provider/p", STSEndpoint: srvSTS.URL}}})
	ev := nextSwap(t, events)
	if ev.Result != "applied" || !strings.HasPrefix(ev.Fingerprint, "STS.one:") {
		t.Fatalf("swap = %+v", ev)
	}
	if st := srv.m.Status(); !st.Expiration.Equal(exp) {
		t.Errorf("server expiration %v, want %v", st.Expiration, exp)
	}
	waitReady(t, health, true)
	_, metrics := httpGet(t, health, "/metrics")
	if !strings.Contains(metrics, `rekey_sidecar_key_expiration_timestamp_seconds{volume_id="csi-inline"}`) ||
		!strings.Contains(metrics, `rekey_sidecar_sts_request_duration_seconds_count{action="AssumeRoleWithOIDC",result="success"} 1`) {
		t.Errorf("metrics:\n%s", metrics)
	}
}

// TestSecretsNeverLogged runs the sidecar at full verbosity through pushes,
// refusals, an incomplete Secret and STS refusals that echo the token, and
// searches every log line, report and metric for the secrets.
func TestSecretsNeverLogged(t *testing.T) {
	const (
		secret1 = "SecretValueNumberOne0123456789"
		secret2 = "SecretValueNumberTwo0123456789"
		stsSK   = "StsSecretKeyValue0123456789"
		stsTok  = "StsSessionTokenValue0123456789"
	)
	sockDir := shortDir(t)
	secretDir := t.TempDir()
	w, _ := atomicwriter.New(secretDir)
	if err := w.WriteStrings(pair("AK1", secret1)); err != nil {
		t.Fatal(err)
	}
	var calls int
	var mu sync.Mutex
	srvSTS := ststest.Alibaba(t, func(rw http.ResponseWriter, form url.Values) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			rw.WriteHeader(400)
			_, _ = io.WriteString(rw, `{"RequestId":"r","Code":"AuthenticationFail.OIDCToken.Invalid","Message":"bad token `+form.Get("OIDCToken")+`"}`)
			return
		}
		_, _ = io.WriteString(rw, `{"Credentials":{"SecurityToken":"`+stsTok+`","Expiration":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+
			`","AccessKeySecret":"`+stsSK+`","AccessKeyId":"STS.leak"}}`)
	})
	tokenDir := t.TempDir()
	aw, _ := atomicwriter.New(tokenDir)
	if err := aw.WriteStrings(map[string]string{contract.SidecarTokenFile: ststest.FakeToken}); err != nil {
		t.Fatal(err)
	}
	bucket := newFakeBucket("AK1")
	srvSecret := startFakeServer(t, filepath.Join(sockDir, "s.sock"), "vol-s", keys.Keys{AccessKeyID: "AK0", SecretAccessKey: "x"}, bucket, 1)
	srvSTS2 := startFakeServer(t, filepath.Join(sockDir, "r.sock"), "vol-r", keys.Keys{AccessKeyID: "AK0", SecretAccessKey: "x"}, bucket, 2)

	logs := &fusetest.LockedBuffer{All: true}
	log, _ := logging.New(logs, "json", 10)
	events := make(chan SwapEvent, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	health := filepath.Join(sockDir, "h.sk")
	go func() {
		done <- Run(ctx, Config{SocketDir: sockDir, Log: log, OnSwap: func(e SwapEvent) { events <- e },
			HealthAddr: "unix:" + health, MetricsAddr: "unix:" + health,
			Debounce: 5 * time.Millisecond, PollInterval: 100 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			Sources: []contract.Source{
				{VolumeID: "vol-s", AuthType: contract.AuthTypeSecret, SecretDir: secretDir},
				{VolumeID: "vol-r", AuthType: contract.AuthTypeRRSA, TokenFile: filepath.Join(tokenDir, contract.SidecarTokenFile),
					RoleARN: "r", OIDCProviderARN: "p", STSEndpoint: srvSTS.URL},
			}})
	}()
	var reports []string
	reports = append(reports, srvSTS2.nextEvent(t, rotation.EventReported).Reason) // the refused token
	for seen := map[string]bool{}; !seen["vol-s"] || !seen["vol-r"]; {
		seen[nextSwap(t, events).VolumeID] = true
	}
	if err := w.WriteStrings(pair("AKBAD", secret2)); err != nil { // refused by the bucket
		t.Fatal(err)
	}
	if e := nextSwap(t, events); e.Result != "refused" {
		t.Errorf("swap = %+v", e)
	}
	if err := w.WriteStrings(map[string]string{"akSecret": secret2}); err != nil { // incomplete
		t.Fatal(err)
	}
	reports = append(reports, srvSecret.nextEvent(t, rotation.EventReported).Reason)
	_, metrics := httpGet(t, health, "/metrics")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	all := logs.String() + strings.Join(reports, "\n") + metrics
	for _, s := range []string{secret1, secret2, stsSK, stsTok, ststest.FakeToken, ststest.FakeToken[len(ststest.FakeToken)-20:]} {
		if strings.Contains(all, s) {
			t.Errorf("secret %q leaked into logs, reports or metrics", s[:8]+"...")
		}
	}
	if !strings.Contains(all, "AuthenticationFail.OIDCToken.Invalid") || !strings.Contains(all, "[redacted]") {
		t.Errorf("the STS refusal is not reported usefully: %q", reports)
	}
}

// TestUntrustedServerGetsNoKeys: a socket served by a process that does
// not run as a trusted server UID (an impostor's, not the node plugin's
// FUSE server) is never sent keys, and readyz says why.
func TestUntrustedServerGetsNoKeys(t *testing.T) {
	sockDir, secretDir := shortDir(t), t.TempDir()
	w, _ := atomicwriter.New(secretDir)
	if err := w.WriteStrings(pair("AK1", "S1")); err != nil {
		t.Fatal(err)
	}
	bucket := newFakeBucket("AK1", "AK2")
	// This test's servers run as this process's UID; trust another one.
	untrusted := uint32(os.Getuid()) + 4242
	events, health := runSidecar(t, Config{SocketDir: sockDir, ServerUIDs: []uint32{untrusted},
		Sources: []contract.Source{{VolumeID: "vol-1", AuthType: contract.AuthTypeSecret, SecretDir: secretDir}}})
	k0 := keys.Keys{AccessKeyID: "AK0", SecretAccessKey: "S0"}
	bucket.allow("AK0")
	srv := startFakeServer(t, filepath.Join(sockDir, "vol-1.sock"), "vol-1", k0, bucket, 1001)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		body := waitReady(t, health, false)
		if strings.Contains(body, "vol-1.sock is served by UID") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz = %q, want the untrusted socket named", body)
		}
	}
	if got := srv.m.Status().Fingerprint; got != k0.Fingerprint() {
		t.Fatalf("the untrusted server got keys: runs %s", got)
	}
	select {
	case e := <-events:
		t.Fatalf("a swap reached the untrusted server: %+v", e)
	default:
	}
}
