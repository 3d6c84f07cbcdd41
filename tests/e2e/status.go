package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The Secrets whose rotation the scenario gates with kubectl rekey wait,
// and how many running mounts use each: writer and plain use appNS's,
// reader and the inline pod annotatedNS's.
var gatedSecrets = []struct {
	ref    string
	mounts int
}{{appNS + "/bucket-keys", 2}, {annotatedNS + "/bucket-keys", 2}}

// kubectlRekey runs the kubectl plugin (built into bin/e2e) on the cluster.
func kubectlRekey(ctx context.Context, o options, c *Cluster, args ...string) (string, error) {
	bin := filepath.Join(o.repo, "bin", "e2e", "kubectl-rekey")
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", c.Kubeconfig())...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl rekey %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

var waitDone = regexp.MustCompile(`(?m)^all (\d+) mounts of Secret \S+ run its current keys (\S+): safe to revoke`)

// statusWaitTimes are the Secret update → kubectl rekey wait returned
// durations, one per rotation, for the summary.
var statusWaitTimes []time.Duration

// rekeyWaitGate is the safe-to-revoke gate after a Secret update at
// updated: kubectl rekey wait --secret must return 0 for every example
// Secret, with every mount that uses it on the new keys, before the caller
// revokes the old key.
func rekeyWaitGate(ctx context.Context, o options, c *Cluster, updated time.Time) error {
	seen, want, lines := 0, 0, 0
	for _, s := range gatedSecrets {
		out, err := kubectlRekey(ctx, o, c, "wait", "--secret", s.ref, "--timeout", "120s", "--interval", "250ms")
		if err != nil {
			return err
		}
		m := waitDone.FindStringSubmatch(out)
		if m == nil {
			return fmt.Errorf("kubectl rekey wait --secret %s: no completion line in:\n%s", s.ref, out)
		}
		n, _ := strconv.Atoi(m[1])
		if n != s.mounts {
			return fmt.Errorf("kubectl rekey wait --secret %s saw %d mounts, the scenario runs %d:\n%s", s.ref, n, s.mounts, out)
		}
		seen += n
		want += s.mounts
		lines += strings.Count(out, "\n") - 1
	}
	took := time.Since(updated)
	statusWaitTimes = append(statusWaitTimes, took)
	logf("E2E status: kubectl rekey wait saw %d/%d mounts on the new key after %.1f s (%d progress lines while waiting)", seen, want, took.Seconds(), lines)
	return nil
}

// statusTable prints kubectl rekey status -A, as a user sees it.
func statusTable(ctx context.Context, o options, c *Cluster) error {
	out, err := kubectlRekey(ctx, o, c, "status", "-A")
	if err != nil {
		return err
	}
	logf("kubectl rekey status -A:\n%s", out)
	if strings.Contains(out, "no status yet") || strings.Contains(out, " NO ") {
		return fmt.Errorf("a mount without status or on stale keys after the rotations:\n%s", out)
	}
	var ds []string
	for _, d := range statusWaitTimes {
		ds = append(ds, fmt.Sprintf("%.1fs", d.Seconds()))
	}
	note("status: kubectl rekey wait returned after every Secret update with all mounts on the new key, before its revocation (update → wait returned: %s)",
		strings.Join(ds, " "))
	return nil
}

// refusedNotSafe runs while the Secret holds keys the S3 server refuses
// (step 4): kubectl rekey status shows the writer's mount on other keys
// than the Secret's, with the refusal, and kubectl rekey wait refuses to
// call the old key safe to revoke (exit 1, naming the writer).
func refusedNotSafe(ctx context.Context, o options, c *Cluster, writer string) error {
	var row string
	if err := waitFor(ctx, 60*time.Second, "the refusal in kubectl rekey status", func() error {
		out, err := kubectlRekey(ctx, o, c, "status", "-n", appNS, "--pod", writer)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 7 && f[0] == writer && f[4] == "NO" && f[6] != "-" {
				row = strings.Join(f, " ")
				return nil
			}
		}
		return fmt.Errorf("no stale row with an error yet:\n%s", out)
	}); err != nil {
		return err
	}
	out, err := kubectlRekey(ctx, o, c, "wait", "--secret", appNS+"/bucket-keys", "--timeout", "3s", "--interval", "1s")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(err.Error(), "not safe to revoke") ||
		!strings.Contains(err.Error(), appNS+"/"+writer) {
		return fmt.Errorf("kubectl rekey wait on a refused key: want exit 1 naming %s, got %w\n%s", writer, err, out)
	}
	note("status: with a refused key in the Secret, kubectl rekey status shows: %s; kubectl rekey wait exits 1 (not safe to revoke)", row)
	return nil
}
