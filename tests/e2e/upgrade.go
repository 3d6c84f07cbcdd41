package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"rekey.dev/rekey/csidriver/supervisor"
)

// The upgrade step rolls the node DaemonSet to an image of another version
// (the same code with another version string, upgradeSuffix) and back,
// while every pod's load runs and a key rotates (docs/e2e.md, step 6b).
const upgradeSuffix = "-e2e-upgrade"

const csiImageRepo = "ghcr.io/rekey-dev/rekey-csi"

// repoVersion is the contents of VERSION: the tag of the product images.
func repoVersion(repo string) (string, error) {
	b, err := os.ReadFile(filepath.Join(repo, "VERSION"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// buildUpgradeImage builds the node plugin image of version v into dir
// (rekey-csi of that version string, the same rekey-fuse) and returns its
// tarball.
func buildUpgradeImage(ctx context.Context, o options, v string) (string, error) {
	bin := filepath.Join(o.repo, "bin", "e2e", "upgrade")
	if err := os.MkdirAll(bin, 0o750); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+v, "-o", filepath.Join(bin, "rekey-csi"), "./cmd/rekey-csi")
	cmd.Dir = o.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build rekey-csi %s: %w\n%s", v, err, out)
	}
	for _, b := range []string{"rekey-fuse", "rekey-controller", "rekey-webhook", "rekey-sidecar"} { // hack/images packs all three images
		data, err := os.ReadFile(filepath.Join(o.repo, "bin", b))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(bin, b), data, 0o755); err != nil { //nolint:gosec // an executable
			return "", err
		}
	}
	out, err := output(ctx, o.repo, filepath.Join(o.repo, "bin", "e2e", "images"), "-bin", bin, "-out", filepath.Join(bin, "images"), "-version", v)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if f, ref, ok := strings.Cut(l, "\t"); ok && strings.HasPrefix(ref, csiImageRepo+":") {
			return f, nil
		}
	}
	return "", fmt.Errorf("hack/images built no %s image: %q", csiImageRepo, out)
}

// nodeMounts lists the node's mounts as its supervisor reports them.
func nodeMounts(ctx context.Context, c *Cluster) ([]supervisor.Info, error) {
	cl := &supervisor.Client{Path: filepath.Join(c.KubeletRoot(), "plugins/s3.rekey.dev/supervisor.sock"), Timeout: 10 * time.Second}
	return cl.List(ctx)
}

// totalOps sums the pods' operation counts.
func totalOps(ctx context.Context, c *Cluster, pods []podRef) (int64, error) {
	var n int64
	for _, p := range pods {
		s, _, err := podStats(ctx, c, p)
		if err != nil {
			return 0, err
		}
		n += s.Ops
	}
	return n, nil
}

var takenOverRE = regexp.MustCompile(`"mount taken over".* took=(\S+)`)

// upgradeStep rolls the node plugin from version from to version to while
// the load runs and rotate (a key rotation) runs once during the rollout;
// it checks that every mount is then served by version to and that no pod
// saw an error, and prints the E2E upgrade line.
func upgradeStep(ctx context.Context, c *Cluster, pods []podRef, from, to string, rotate func() error) error {
	before, err := nodeMounts(ctx, c)
	if err != nil {
		return err
	}
	ops0, err := totalOps(ctx, c, pods)
	if err != nil {
		return err
	}
	began := time.Now()
	img := csiImageRepo + ":" + to
	if _, err := c.kubectl(ctx, "-n", "rekey-system", "set", "image", "daemonset/rekey-csi-node", "driver="+img, "supervisor="+img); err != nil {
		return err
	}
	rotated := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second) // the new node pod is starting
		rotated <- rotate()
	}()
	if _, err := c.kubectl(ctx, "-n", "rekey-system", "rollout", "status", "daemonset/rekey-csi-node", "--timeout=300s"); err != nil {
		return withDescribe(ctx, c, err, "rekey-system", "pods")
	}
	rolled := time.Since(began)
	if err := <-rotated; err != nil {
		return fmt.Errorf("key rotation during the rollout: %w", err)
	}
	var after []supervisor.Info
	if err := waitFor(ctx, 60*time.Second, "every mount served by "+to, func() error {
		if after, err = nodeMounts(ctx, c); err != nil {
			return err
		}
		for _, in := range after {
			if in.Version != to || in.Dead {
				return fmt.Errorf("mount %s (%s): version %q, dead %v", in.ID, in.Spec.VolumeID, in.Version, in.Dead)
			}
		}
		if len(after) != len(before) {
			return fmt.Errorf("%d mounts, had %d", len(after), len(before))
		}
		return nil
	}); err != nil {
		return err
	}
	if err := waitOps(ctx, c, pods, 20); err != nil {
		return fmt.Errorf("after the rollout: %w", err)
	}
	if err := checkNoErrors(ctx, c, pods, "upgrade "+from+" → "+to); err != nil {
		return err
	}
	ops1, err := totalOps(ctx, c, pods)
	if err != nil {
		return err
	}
	// Hand-off per mount, from the new supervisor's log.
	pod, err := c.kubectl(ctx, "-n", "rekey-system", "get", "pods", "-l", "app.kubernetes.io/name=rekey-csi-node", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return err
	}
	logs, _ := c.kubectl(ctx, "-n", "rekey-system", "logs", pod, "-c", "supervisor")
	var took []time.Duration
	for _, m := range takenOverRE.FindAllStringSubmatch(logs, -1) {
		if d, err := time.ParseDuration(strings.Trim(m[1], `"`)); err == nil {
			took = append(took, d)
		}
	}
	slices.Sort(took)
	perMount := "not logged"
	if len(took) > 0 {
		perMount = fmt.Sprintf("p50 %s, p99 %s", took[len(took)/2].Round(time.Millisecond), took[(len(took)*99+99)/100-1].Round(time.Millisecond))
	}
	logf("E2E upgrade: node plugin %s → %s with %d live mounts, %d operations, 0 failed (rollout %s; hand-off per mount %s; a key rotated meanwhile)",
		from, to, len(after), ops1-ops0, rolled.Round(100*time.Millisecond), perMount)
	return nil
}

// upgradeAndBack is the upgrade step: to upgradeSuffix and back.
func upgradeAndBack(ctx context.Context, o options, c *Cluster, pods []podRef, rotate func() error) error {
	v, err := repoVersion(o.repo)
	if err != nil {
		return err
	}
	up := v + upgradeSuffix
	tar, err := buildUpgradeImage(ctx, o, up)
	if err != nil {
		return err
	}
	if _, err := c.ctr(ctx, "images", "import", "--no-unpack=false", tar); err != nil {
		return err
	}
	if err := upgradeStep(ctx, c, pods, v, up, rotate); err != nil {
		return fmt.Errorf("upgrade %s → %s: %w", v, up, err)
	}
	if err := upgradeStep(ctx, c, pods, up, v, rotate); err != nil {
		return fmt.Errorf("rollback %s → %s: %w", up, v, err)
	}
	return nil
}
