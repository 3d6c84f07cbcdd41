package control_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// The fakes stand in for S3: real validation is tested with the S3 client.

type fakeValidator struct {
	mu    sync.Mutex
	err   error
	calls int
}

func (f *fakeValidator) Validate(context.Context, keys.Keys) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.err
}

func (f *fakeValidator) refuse(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeValidator) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type fakeApplier struct {
	mu   sync.Mutex
	keys keys.Keys
	gen  uint64
}

func (f *fakeApplier) Apply(k keys.Keys, l rotation.Ledger) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys, f.gen = k, l.Generation
}

func (f *fakeApplier) get() (keys.Keys, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys, f.gen
}

// logBuffer captures everything a logr.Logger writes, at every verbosity.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.b.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: 10})
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var testIdentity = rotation.Identity{
	VolumeID:  "pv-bucket-a",
	Bucket:    "bucket-a",
	Prefix:    "team/x",
	AuthType:  "secret",
	SecretRef: "ns1/s3-keys",
	RoleARN:   "acs:ram::123:role/reader",
}

var initialKeys = keys.Keys{AccessKeyID: "AKIDINITIAL", SecretAccessKey: "initialSecretValue0"}

type env struct {
	path   string
	client credentialsv1.CredentialServiceClient
	mgr    *rotation.Manager
	val    *fakeValidator
	app    *fakeApplier
	logs   *logBuffer
}

// shortSocketPath returns a socket path well below the 108-byte sun_path
// limit (t.TempDir can exceed it), removed when the test ends.
func shortSocketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "c.sock")
}

// start serves a real rotation.Manager with fake S3 over a real unix
// socket and returns a client dialled through control.Dial.
func start(t *testing.T, allowed []uint32) *env {
	t.Helper()
	e := &env{path: shortSocketPath(t), val: &fakeValidator{}, app: &fakeApplier{}, logs: &logBuffer{}}
	lis := listen(t, e.path, allowed, e.logs)
	// The Manager's clock stands just after the epoch, so the small
	// generations of these tests are not ahead of it and generation 0 (a
	// sender older than generations on the node's clock) becomes
	// "previous + 1".
	e.mgr = rotation.New(testIdentity, initialKeys, e.val, e.app, rotation.Options{Now: func() time.Time { return time.Unix(0, 1) }})
	serve(t, e.mgr, lis, e.logs)
	e.client = dial(t, e.path)
	return e
}

func listen(t *testing.T, path string, allowed []uint32, logs *logBuffer) net.Listener {
	t.Helper()
	lis, err := control.Listen(control.ListenOptions{Path: path, AllowedUIDs: allowed, Log: logs.logger()})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	return lis
}

// serve runs a Server until the test ends and checks that Serve returns nil.
func serve(t *testing.T, m control.Manager, lis net.Listener, logs *logBuffer) {
	t.Helper()
	srv := control.NewServer(m, control.Options{Log: logs.logger()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func dial(t *testing.T, path string) credentialsv1.CredentialServiceClient {
	t.Helper()
	client, closer, err := control.Dial(path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { closer.Close() })
	return client
}

func rpcContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func selfUID() []uint32 { return []uint32{uint32(os.Getuid())} }
