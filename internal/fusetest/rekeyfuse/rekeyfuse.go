// Package rekeyfuse runs fuseserver.Run in a test process: a real mount of
// a fusetest.Server's bucket with the control API on a socket. It is apart
// from fusetest so that fuseserver's own packages can use fusetest.
package rekeyfuse

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"rekey.dev/rekey/fuseserver"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/logging"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// Mount is fuseserver.Run serving a fusetest.Server's Bucket on a real
// mount, in process, with its control API on a socket.
type Mount struct {
	Dir     string // the mountpoint
	Initial keys.Keys
	Client  credentialsv1.CredentialServiceClient
	Logs    interface{ String() string } // all that Run logged, verbosely
	// StagingDir is the server's staging directory.
	StagingDir string

	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with runErr
	runErr error
}

// Stop stops the server as SIGTERM does (cancels Run's context) and
// returns what Run returned; later calls return the same.
func (m *Mount) Stop() error {
	m.cancel()
	select {
	case <-m.done:
		return m.runErr
	case <-time.After(30 * time.Second):
		return errors.New("Run did not return within 30s")
	}
}

// Wait waits up to timeout for Run to return on its own (an unmount from
// outside) and returns what it returned; ok is false on timeout.
func (m *Mount) Wait(timeout time.Duration) (err error, ok bool) {
	select {
	case <-m.done:
		return m.runErr, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Run mounts s's bucket with the initial keys (extra mount options
// are appended to use_path_request_style) and stops it when the test ends.
// It skips unless the test runs as root.
func Run(t testing.TB, s *fusetest.Server, initial keys.Keys, mountOptions string) *Mount {
	t.Helper()
	return RunWith(t, s, initial, Options{MountOptions: mountOptions})
}

// Options are the optional settings of RunWith.
type Options struct {
	// MountOptions are appended to use_path_request_style.
	MountOptions string
	// KeyCustody, if set, is passed (as a duplicate) as the key custody file.
	KeyCustody *os.File
	// Mountpoint, if set, is the directory to mount on (it must exist);
	// by default a new one in a temporary directory.
	Mountpoint string
}

// RunWith is Run with more options.
func RunWith(t testing.TB, s *fusetest.Server, initial keys.Keys, o Options) *Mount {
	t.Helper()
	mountOptions := o.MountOptions
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	logs := &fusetest.LockedBuffer{All: true} // tests search it
	m := &Mount{Initial: initial, Logs: logs}
	// Socket paths must stay below 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "rkfs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	m.Dir = o.Mountpoint
	if m.Dir == "" {
		m.Dir = filepath.Join(dir, "mnt")
		if err := os.Mkdir(m.Dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	keyFile := filepath.Join(dir, "keys.json")
	var buf bytes.Buffer
	if err := keys.Encode(&buf, initial); err != nil {
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
	cfg.Endpoint, cfg.Bucket, cfg.MountOptions = s.URL, fusetest.Bucket, "use_path_request_style"
	if mountOptions != "" {
		cfg.MountOptions += "," + mountOptions
	}
	cfg.Mountpoint, cfg.StagingDir, cfg.KeysFile = m.Dir, filepath.Join(dir, "staging"), keyFile
	// Run owns (and closes) the ready descriptor, as a child process would:
	// hand it a duplicate so readyW's finalizer cannot close a reused number.
	readyFD, err := syscall.Dup(int(readyW.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	_ = readyW.Close()
	cfg.ControlSocket, cfg.VolumeID, cfg.ReadyFD = filepath.Join(dir, "ctl.sock"), "vol-1", readyFD
	if o.KeyCustody != nil {
		if cfg.KeyCustodyFD, err = syscall.Dup(int(o.KeyCustody.Fd())); err != nil {
			t.Fatal(err)
		}
	}
	log, err := logging.New(logs, "text", 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done, m.StagingDir = cancel, make(chan struct{}), cfg.StagingDir
	stopped := make(chan error, 1)
	go func() {
		m.runErr = fuseserver.Run(ctx, cfg, log)
		stopped <- m.runErr
		close(m.done)
	}()
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ready := make(chan struct{})
	go func() { b := make([]byte, 1); _, _ = readyR.Read(b); close(ready) }()
	select {
	case <-ready:
	case err := <-stopped:
		t.Fatalf("Run: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("not ready\n%s", logs)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("key file still exists after start: %v", err)
	}
	client, closer, err := control.Dial(cfg.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closer.Close() })
	m.Client = client
	return m
}

// Swap sends k with generation gen through the control API.
func (m *Mount) Swap(ctx context.Context, k keys.Keys, gen uint64) (*credentialsv1.SwapResponse, error) {
	req := &credentialsv1.SwapRequest{AccessKeyId: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
		SessionToken: k.SessionToken, Source: "test", Generation: gen}
	if !k.Expiration.IsZero() {
		req.Expiration = timestamppb.New(k.Expiration)
	}
	return m.Client.Swap(ctx, req)
}

// SwapApplied is a loadcheck.SwapFunc: Swap, and an error unless applied.
func (m *Mount) SwapApplied(ctx context.Context, k keys.Keys, gen uint64) error {
	resp, err := m.Swap(ctx, k, gen)
	if err != nil {
		return err
	}
	if resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		return errors.New(resp.GetResult().String() + ": " + resp.GetMessage())
	}
	return nil
}
