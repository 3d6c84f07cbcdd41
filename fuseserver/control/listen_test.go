package control_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/sockettest"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

func TestPeerCredentials(t *testing.T) {
	uid := uint32(os.Getuid())
	t.Run("allowed", func(t *testing.T) {
		e := start(t, []uint32{uid + 1, uid})
		if _, err := e.client.Status(rpcContext(t), &credentialsv1.StatusRequest{}); err != nil {
			t.Fatalf("Status from an allowed UID: %v", err)
		}
		if want := fmt.Sprintf(`"peerUid"=%d "peerPid"=%d`, uid, os.Getpid()); !strings.Contains(e.logs.String(), want) {
			t.Errorf("RPC log lacks %s:\n%s", want, e.logs)
		}
	})
	t.Run("refused", func(t *testing.T) {
		e := start(t, []uint32{uid + 1})
		_, err := e.client.Status(rpcContext(t), &credentialsv1.StatusRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Status from a UID that is not allowed = %v, want Unavailable", err)
		}
		want := fmt.Sprintf(`"msg"="Refused control connection from a UID that is not allowed" "peerUid"=%d`, uid)
		if !strings.Contains(e.logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, e.logs)
		}
		if strings.Contains(e.logs.String(), "CredentialService/Status") {
			t.Errorf("refused peer reached the service:\n%s", e.logs)
		}
	})
}

func TestListenSocketMode(t *testing.T) {
	for _, c := range []struct {
		mode, want fs.FileMode
	}{{0, 0o600}, {0o660, 0o660}} {
		path := shortSocketPath(t)
		lis, err := control.Listen(control.ListenOptions{Path: path, Mode: c.mode, AllowedUIDs: selfUID()})
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != c.want {
			t.Errorf("Mode %v: socket has mode %v, want socket with %v", c.mode, fi.Mode(), c.want)
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".rekey-sock-*")); len(left) != 0 {
			t.Errorf("temporary directories left behind: %v", left)
		}
		lis.Close()
	}
}

func TestListenChown(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown needs root")
	}
	path := shortSocketPath(t)
	lis, err := control.Listen(control.ListenOptions{Path: path, Chown: true, OwnerUID: 65532, OwnerGID: 65533, AllowedUIDs: selfUID()})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer lis.Close()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65532 || st.Gid != 65533 || st.Mode&0o777 != 0o600 {
		t.Errorf("socket owned by %d:%d mode %#o, want 65532:65533 0600", st.Uid, st.Gid, st.Mode&0o777)
	}
}

// TestListenAppearsByRename watches the socket's directory with inotify:
// the socket reaches its path only by a rename, already with its mode and
// owner (no bind, chmod or chown there), so it never exists at its path
// with wider permissions, not even for a moment.
func TestListenAppearsByRename(t *testing.T) {
	path := shortSocketPath(t)
	opts := control.ListenOptions{Path: path, AllowedUIDs: selfUID()}
	if os.Getuid() == 0 {
		opts.Chown, opts.OwnerUID, opts.OwnerGID = true, 65532, 65532
	}
	sockettest.AppearsByRename(t, path, func() {
		lis, err := control.Listen(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lis.Close() })
	})
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := shortSocketPath(t)
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close() // a crashed server leaves its socket file behind

	e := &env{path: path, logs: &logBuffer{}}
	serve(t, rotation.New(testIdentity, initialKeys, &fakeValidator{}, &fakeApplier{}, rotation.Options{}), listen(t, path, selfUID(), e.logs), e.logs)
	if _, err := dial(t, path).Status(rpcContext(t), &credentialsv1.StatusRequest{}); err != nil {
		t.Fatalf("Status over the replaced socket: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := shortSocketPath(t)
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := control.Listen(control.ListenOptions{Path: path, AllowedUIDs: selfUID()})
	if !errors.Is(err, control.ErrNotSocket) {
		t.Errorf("Listen over a regular file = %v, want ErrNotSocket", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Errorf("regular file changed to %q", b)
	}
}

func TestListenRequiresAllowedUIDs(t *testing.T) {
	if _, err := control.Listen(control.ListenOptions{Path: shortSocketPath(t)}); !errors.Is(err, control.ErrNoAllowedUIDs) {
		t.Errorf("Listen without AllowedUIDs = %v, want ErrNoAllowedUIDs", err)
	}
}

// TestListenLongPath binds a socket whose path exceeds sun_path, as the
// node plugin does under /var/lib/kubelet/pods/<uid>/volumes/..., and
// reaches it through /proc/self/fd the same way.
func TestListenLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pv-bucket-a.sock")
	if len(path) < 108 {
		t.Fatalf("path %q is not longer than sun_path", path)
	}
	logs := &logBuffer{}
	serve(t, rotation.New(testIdentity, initialKeys, &fakeValidator{}, &fakeApplier{}, rotation.Options{}), listen(t, path, selfUID(), logs), logs)
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != fs.ModeSocket|0o600 {
		t.Fatalf("Lstat(socket) = %v, %v; want a 0600 socket", fi, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	client := dial(t, fmt.Sprintf("/proc/self/fd/%d/pv-bucket-a.sock", d.Fd()))
	if _, err := client.Status(rpcContext(t), &credentialsv1.StatusRequest{}); err != nil {
		t.Fatalf("Status over a long path: %v", err)
	}
}

func TestServeStopsOnCancelAndRemovesSocket(t *testing.T) {
	path := shortSocketPath(t)
	lis, err := control.Listen(control.ListenOptions{Path: path, AllowedUIDs: selfUID()})
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(rotation.New(testIdentity, initialKeys, &fakeValidator{}, &fakeApplier{}, rotation.Options{}), control.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	if _, err := dial(t, path).Status(rpcContext(t), &credentialsv1.StatusRequest{}); err != nil {
		t.Fatalf("Status: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Serve returned: %v", err)
	}
}

func TestNewListenerWrapsInheritedListener(t *testing.T) {
	path := shortSocketPath(t)
	inherited, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.NewListener(inherited, nil, (&logBuffer{}).logger()); !errors.Is(err, control.ErrNoAllowedUIDs) {
		t.Errorf("NewListener without UIDs = %v, want ErrNoAllowedUIDs", err)
	}
	logs := &logBuffer{}
	lis, err := control.NewListener(inherited, []uint32{uint32(os.Getuid()) + 1}, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, rotation.New(testIdentity, initialKeys, &fakeValidator{}, &fakeApplier{}, rotation.Options{}), lis, logs)
	if _, err := dial(t, path).Status(rpcContext(t), &credentialsv1.StatusRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Status through a wrapped listener from a UID that is not allowed = %v, want Unavailable", err)
	}
}
