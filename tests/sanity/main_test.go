// Package sanity runs the CSI node plugin against real FUSE mounts and the
// in-process S3 server: csi-sanity, the process-level lifecycle harness
// (driver and supervisor as separate processes) and the publish latency
// benchmark. They need root and /dev/fuse; without them they skip, unless
// CI=true, where they fail.
package sanity

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"rekey.dev/rekey/csidriver"
	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/csiproc"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

// binDir holds rekey-fuse and rekey-csi, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() != 0 {
			return m.Run() // tests skip
		}
		dir, err := os.MkdirTemp("", "rekey-csi-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = os.RemoveAll(dir) }()
		for _, b := range []string{"rekey-fuse", "rekey-csi"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "rekey.dev/rekey/cmd/"+b)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "building", b, err)
				return 1
			}
		}
		binDir = dir
		return m.Run()
	}())
}

// needRoot skips (or, with CI=true, fails) a test that needs real mounts.
func needRoot(tb testing.TB) {
	tb.Helper()
	_, err := os.Stat("/dev/fuse")
	if os.Geteuid() == 0 && err == nil && binDir != "" {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("needs root and /dev/fuse")
	}
	tb.Skip("needs root and /dev/fuse")
}

// shortTempDir returns a fresh directory with a short path (unix socket
// paths are limited to 108 bytes), removed at the end of the test.
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "rk")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		csiproc.Reap(d)
		_ = os.RemoveAll(d)
	})
	return d
}

// env is an S3 server with a bucket and a set of keys.
type env struct {
	s3     *fakes3.Server
	keys   keys.Keys
	bucket string
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	k := fakes3.NewKeys("AKSANITY")
	srv, err := fakes3.Start(k, "sanity")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	return &env{s3: srv, keys: k, bucket: "sanity"}
}

func (e *env) volumeContext() map[string]string {
	return map[string]string{"bucket": e.bucket, "url": e.s3.URL, "otherOpts": "-o use_path_request_style"}
}

func secretsOf(k keys.Keys) map[string]string {
	return map[string]string{"akId": k.AccessKeyID, "akSecret": k.SecretAccessKey}
}

// inProcessDriver runs the driver and a supervisor (on its socket, so the
// SCM_RIGHTS hand-off is exercised) in this process, and returns the CSI
// endpoint. opts adjust the driver's Options before it is created.
func inProcessDriver(tb testing.TB, log logr.Logger, opts ...func(*csidriver.Options)) (endpoint string, d *csidriver.Driver) {
	tb.Helper()
	dir := shortTempDir(tb)
	ctx, cancel := context.WithCancel(context.Background())
	m := mounter.New()
	sup, err := supervisor.New(ctx, supervisor.Config{FuseBinary: filepath.Join(binDir, "rekey-fuse"),
		StateDir: filepath.Join(dir, "state"), Aborter: m, Log: log.WithName("supervisor"), StopTimeout: 20 * time.Second,
		ServerOutput: serverOutput(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	supSock := filepath.Join(dir, "sup.sock")
	lis, err := supervisor.Listen(supSock)
	if err != nil {
		tb.Fatal(err)
	}
	supDone := make(chan struct{})
	go func() { defer close(supDone); _ = sup.Serve(ctx, lis) }()
	o := csidriver.Options{NodeID: "sanity-node", Version: "test", KubeletRootDir: filepath.Join(dir, "kubelet"),
		Mounter: m, Runner: &supervisor.Client{Path: supSock}, Log: log.WithName("driver"),
		Policy: &csidriver.Policy{InlineVolumes: true, InsecureSTS: true}} // the test STS servers speak http
	for _, f := range opts {
		f(&o)
	}
	d, err = csidriver.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	endpoint = filepath.Join(dir, "csi.sock")
	clis, err := net.Listen("unix", endpoint)
	if err != nil {
		tb.Fatal(err)
	}
	drvDone := make(chan struct{})
	go func() { defer close(drvDone); _ = d.Serve(ctx, clis) }()
	tb.Cleanup(func() {
		// Stop every server the test left behind, then the driver.
		if infos, err := sup.List(context.Background()); err == nil {
			for _, in := range infos {
				_ = sup.Stop(context.Background(), in.ID)
				_ = m.Unmount(in.Spec.Target)
			}
		}
		cancel()
		<-drvDone
		<-supDone
	})
	return endpoint, d
}

func nodeClient(tb testing.TB, endpoint string) csi.NodeClient {
	tb.Helper()
	conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return csi.NewNodeClient(conn)
}

func mountCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
}

func testLogger(t *testing.T) logr.Logger {
	if testing.Verbose() {
		return testr.New(t)
	}
	return logr.Discard()
}

func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }

// serverOutput is where the FUSE servers log: stderr with -v, else nowhere.
func serverOutput(tb testing.TB) *os.File {
	if testing.Verbose() {
		return os.Stderr
	}
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = f.Close() })
	return f
}
