// Command e2e brings up a single-node Kubernetes cluster on loopback (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
// containerd, no Docker, no registry), installs rekey from manifests/ with
// the overlay in tests/e2e/overlay, and runs the end-to-end scenario of
// docs/e2e.md against a MinIO server on 127.0.0.1. Everything it starts is
// stopped and every mount it leaves is removed on exit, also on failure or
// SIGINT. `make e2e` runs it; it needs root, /dev/fuse, containerd, runc and
// the CNI plugins (Debian: containerd runc containernetworking-plugins).
//
//	go run ./tests/e2e [-up] [-rotations 5]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Names of the images the e2e test builds besides the product images.
const (
	pauseImage   = "localhost/rekey-e2e/pause:v1"
	loadgenImage = "localhost/rekey-e2e/loadgen:v1"
)

// workDir holds the cluster's certificates, configuration, containerd store
// and kubelet root (kept for the next run; etcd and MinIO start empty).
const (
	workDir = "/var/lib/rekey-e2e"
	apiPort = 16443
)

type options struct {
	dir     string
	repo    string
	up      bool
	rounds  int
	apiPort int
}

func main() {
	var o options
	flag.BoolVar(&o.up, "up", false, "only bring the cluster up with rekey installed, print how to reach it, and wait for SIGINT")
	flag.IntVar(&o.rounds, "rotations", 5, "key rotations under load")
	flag.Parse()
	// Fixed, because tests/e2e/overlay names them: kubelet's root directory
	// (Dir/kubelet) and the API server's port.
	o.dir, o.apiPort = workDir, apiPort
	repo, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	o.repo = repo
	if os.Getuid() != 0 {
		fatal(fmt.Errorf("e2e needs root (mounts, containerd, kubelet)"))
	}
	if err := prereqs(); err != nil {
		fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatal(err)
	}
}

// prereqs checks the host programs the cluster runs.
func prereqs() error {
	var missing []string
	for _, p := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/dev/fuse"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v; on Debian: apt-get install -y containerd runc containernetworking-plugins iproute2", missing)
	}
	return nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "e2e: FAIL:", err)
	os.Exit(1)
}

var start = time.Now()

// logf prints a progress line with the time since start.
func logf(format string, a ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
}

func run(ctx context.Context, o options) (err error) {
	k8sBin, err := output(ctx, o.repo, "tests/cluster/build.sh", "--all")
	if err != nil {
		return err
	}
	logf("kubernetes binaries: %s", k8sBin)
	images, err := buildImages(ctx, o)
	if err != nil {
		return err
	}
	c := &Cluster{Dir: o.dir, K8sBin: k8sBin, APIPort: o.apiPort, EtcdPort: 12379, Pause: pauseImage}
	// Leftovers of an interrupted run first.
	for _, n := range c.Down() {
		logf("cleanup of an earlier run: %s", n)
	}
	defer func() {
		t := time.Now()
		notes := c.Down()
		left := mountsUnder(o.dir)
		logf("teardown in %.1fs %v; mounts left under %s: %d", time.Since(t).Seconds(), notes, o.dir, len(left))
		if len(left) > 0 && err == nil {
			err = fmt.Errorf("mounts left after teardown: %v", left)
		}
	}()
	t := time.Now()
	if err := c.Up(ctx); err != nil {
		return err
	}
	logf("cluster up in %.1fs (node Ready)", time.Since(t).Seconds())
	t = time.Now()
	for _, img := range images {
		if _, err := c.ctr(ctx, "images", "import", "--no-unpack=false", img); err != nil {
			return err
		}
	}
	logf("imported %d images in %.1fs", len(images), time.Since(t).Seconds())
	if o.up {
		logf("cluster up: export KUBECONFIG=%s; Ctrl-C to tear down", c.Kubeconfig())
		<-ctx.Done()
		return nil
	}
	return scenario(ctx, o, c)
}

// buildImages builds the static binaries and the image tarballs: the product
// images with hack/images, plus the pause and load generator images.
func buildImages(ctx context.Context, o options) ([]string, error) {
	t := time.Now()
	version, err := repoVersion(o.repo)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(o.repo, "bin")
	e2eBin := filepath.Join(bin, "e2e")
	for _, b := range []struct{ out, pkg string }{
		{filepath.Join(bin, "rekey-csi"), "./cmd/rekey-csi"},
		{filepath.Join(bin, "rekey-fuse"), "./cmd/rekey-fuse"},
		{filepath.Join(bin, "rekey-controller"), "./cmd/rekey-controller"},
		{filepath.Join(bin, "rekey-webhook"), "./cmd/rekey-webhook"},
		{filepath.Join(bin, "rekey-sidecar"), "./cmd/rekey-sidecar"},
		{filepath.Join(e2eBin, "pause"), "./tests/e2e/pause"},
		{filepath.Join(e2eBin, "loadgen"), "./tests/e2e/loadgen"},
		{filepath.Join(e2eBin, "images"), "./hack/images"},
		{filepath.Join(e2eBin, "kubectl-rekey"), "./cmd/kubectl-rekey"},
	} {
		// The version string of the node plugin's images (VERSION), which
		// the upgrade step checks the servers report.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", b.out, b.pkg)
		cmd.Dir = o.repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	out, err := output(ctx, o.repo, filepath.Join(e2eBin, "images"), "-bin", bin, "-out", filepath.Join(bin, "images"),
		"-extra", pauseImage+"="+filepath.Join(e2eBin, "pause")+":65535",
		"-extra", loadgenImage+"="+filepath.Join(e2eBin, "loadgen")+":0")
	if err != nil {
		return nil, err
	}
	var tars []string
	for _, l := range strings.Split(out, "\n") {
		if f, _, ok := strings.Cut(l, "\t"); ok {
			tars = append(tars, f)
		}
	}
	logf("built binaries and %d images in %.1fs", len(tars), time.Since(t).Seconds())
	return tars, nil
}

// output runs a command in dir and returns the last line of its stdout;
// stderr goes to ours.
func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	s := strings.TrimSpace(string(out))
	if strings.Count(s, "\t") == 0 {
		if i := strings.LastIndex(s, "\n"); i >= 0 {
			s = s[i+1:]
		}
	}
	return s, nil
}
