package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/csiproc"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
)

// The two ways new keys reach a live mount.
const (
	pathRepublish = "republish"
	pathSidecar   = "sidecar"
)

// rotation is what one swap did.
type rotation struct {
	path string
	took time.Duration
}

// swap is the loadcheck.SwapFunc. Odd rotations go through kubelet's
// republish (requiresRepublish: NodePublishVolume again on the same
// target with the Secret's new keys), even ones through the sidecar
// (kubelet updates the projected Secret, the sidecar pushes the keys to
// the socket in the pod's emptyDir). Either way the projected Secret and
// the republished Secret end up equal, as in a cluster.
func (d *demo) swap(ctx context.Context, k keys.Keys, _ uint64) (rotation, error) {
	d.issued = append(d.issued, k)
	if len(d.issued)%2 == 0 {
		took, err := d.republish(ctx, k)
		return rotation{pathRepublish, took}, err
	}
	took, err := d.sidecarSwap(ctx, k)
	return rotation{pathSidecar, took}, err
}

// republish sends NodePublishVolume for the mounted target with the new
// Secret. A republish never fails (kubelet would remove the target), so
// success is read from the FUSE server's Status. Then the projected
// Secret follows: the sidecar finds the keys in use and pushes nothing.
func (d *demo) republish(ctx context.Context, k keys.Keys) (time.Duration, error) {
	took, err := d.kubelet.publish(ctx, publishRequest(d.pod, d.s3.URL, k))
	if err != nil {
		return 0, err
	}
	st, err := d.sidecar.statusNow(ctx)
	if err != nil {
		return 0, err
	}
	if st.GetFingerprint() != k.Fingerprint() {
		return 0, fmt.Errorf("republish did not apply keys %s: the server runs %s (last swap: %s)",
			k.Fingerprint(), st.GetFingerprint(), st.GetLastSwap().GetMessage())
	}
	applied, err := d.sidecar.counter(ctx, "rekey_sidecar_swaps_total", `result="applied"`)
	if err != nil {
		return 0, err
	}
	d.refreshes++
	if err := d.writeSecret(k); err != nil {
		return 0, err
	}
	if err := d.sidecar.waitReady(ctx, d.refreshes); err != nil {
		return 0, err
	}
	if again, err := d.sidecar.counter(ctx, "rekey_sidecar_swaps_total", `result="applied"`); err != nil {
		return 0, err
	} else if again != applied {
		return 0, errors.New("the sidecar swapped keys after the republish applied them")
	}
	return took, nil
}

// sidecarSwap updates the projected Secret the way kubelet does and waits
// until the FUSE server runs the keys; the latency is from the update to
// the applied swap.
func (d *demo) sidecarSwap(ctx context.Context, k keys.Keys) (time.Duration, error) {
	d.refreshes++
	begin := time.Now()
	if err := d.writeSecret(k); err != nil {
		return 0, err
	}
	at, err := d.sidecar.waitFingerprint(ctx, k.Fingerprint(), 20*time.Second)
	if err != nil {
		return 0, err
	}
	if err := d.sidecar.waitReady(ctx, d.refreshes); err != nil {
		return 0, err
	}
	return max(at.Sub(begin), 0), nil
}

func (d *demo) exercise(ctx context.Context) (Summary, error) {
	cfg := d.cfg
	if err := d.writeProbe(); err != nil {
		return Summary{}, err
	}
	var st loadcheck.Stats
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		loadcheck.Load{Dir: d.pod.target, Workers: cfg.Workers}.Run(loadCtx, &st)
		close(loadDone)
	}()

	var last rotation
	rot := &loadcheck.Rotator{Server: d.s3, Current: d.initial, Swap: func(ctx context.Context, k keys.Keys, gen uint64) error {
		var err error
		last, err = d.swap(ctx, k, gen)
		return err
	}}
	sum := Summary{ViaPath: map[string]int{}, Publish: d.publish}
	var lat []time.Duration
	kills := killPoints(cfg.Rotations, cfg.Kills)
	began := time.Now()
	for i := 0; i < cfg.Rotations && ctx.Err() == nil; i++ {
		time.Sleep(cfg.Interval)
		// Rotate's own time would include the checks after the swap.
		if _, err := rot.Rotate(ctx); err != nil {
			sum.SwapFailures++
			sum.Errors = append(sum.Errors, fmt.Sprintf("rotation %d (%s): %v", i+1, last.path, err))
			continue
		}
		lat = append(lat, last.took)
		sum.ViaPath[last.path]++
		how := "Secret updated, sidecar swapped to"
		if last.path == pathRepublish {
			how = "NodePublishVolume (republish) swapped to"
		}
		fmt.Printf("demo: rotation %2d: %s %s in %s, old key revoked\n", i+1, how, rot.Current.Fingerprint(), last.took.Round(10*time.Microsecond))
		if kills[i+1] {
			d.kill(ctx, &sum, rot.Current)
		}
	}
	time.Sleep(cfg.Interval) // keep the load running on the last key too
	stopLoad()
	stopped := true
	select {
	case <-loadDone:
	case <-time.After(loadStopTimeout):
		stopped = false
	}
	sum.Rotations, sum.Ops, sum.Failed = len(lat), st.Ops.Load(), st.Failed.Load()
	sum.Mismatched, sum.Bytes, sum.Duration = st.Mismatched.Load(), st.Bytes.Load(), time.Since(began)
	sum.P50, sum.P99 = loadcheck.Percentile(lat, 50), loadcheck.Percentile(lat, 99)
	sum.ResumeP50, sum.ResumeMax = loadcheck.Percentile(sum.resumeTimes, 50), loadcheck.Percentile(sum.resumeTimes, 100)
	sum.Errors = append(sum.Errors, st.Errors()...)
	if !stopped {
		// The checks below would block on the mount too; the cleanup
		// kills the node plugin's processes, which ends the connection.
		d.hung = true
		sum.fail("the load did not stop within %s: a worker waits for a request the FUSE server does not answer (%s)",
			loadStopTimeout, fuseWaiting(d.pod.target))
		return sum, nil
	}

	// No secret in any process's argv or environment, nor in any log; no
	// failure Event (they are logged: there is no API server).
	if err := d.checkNoLeak(); err != nil {
		sum.fail("%v", err)
	}
	if b, err := os.ReadFile(d.node.DriverLog); err != nil {
		sum.fail("driver log: %v", err)
	} else {
		for _, reason := range []string{contract.EventReasonRefreshFailed, contract.EventReasonFUSEServerDied} {
			if n := bytes.Count(b, []byte(reason)); n > 0 {
				sum.fail("the driver recorded %d %s Events (see driver.log)", n, reason)
			}
		}
		if n := bytes.Count(b, []byte(contract.EventReasonFUSEServerResumed)); n != sum.Resumed {
			sum.fail("the driver recorded %d %s Events for %d resumes (see driver.log)", n, contract.EventReasonFUSEServerResumed, sum.Resumed)
		}
	}
	// A last file, written just before the unpublish, must be in the
	// bucket afterwards.
	final, err := d.writeLast()
	if err != nil {
		sum.fail("%v", err)
	}
	// Unpublish: the server uploads what is staged and exits, the target
	// is unmounted and removed, nothing is left running.
	took, err := d.kubelet.unpublish(ctx, d.pod)
	if err != nil {
		sum.fail("%v", err)
		return sum, nil
	}
	sum.Unpublish = took
	if err := d.checkUnpublished(ctx); err != nil {
		sum.fail("%v", err)
	} else {
		fmt.Printf("demo: NodeUnpublishVolume in %s: target unmounted and removed, pod socket gone, no rekey-fuse left\n", took.Round(100*time.Microsecond))
	}
	if final != nil {
		if err := d.checkBucket(ctx, rot.Current, final); err != nil {
			sum.fail("%v", err)
		}
	}
	return sum, nil
}

// loadStopTimeout bounds how long the workers may take to finish their
// current operation once the load is stopped.
const loadStopTimeout = 30 * time.Second

// lastFile is written through the mount right before the unpublish.
const lastFile = "written-before-unpublish"

// writeLast writes lastFile through the mount (no fsync) and returns its
// contents.
func (d *demo) writeLast() ([]byte, error) {
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(d.pod.target, lastFile), data, 0o600); err != nil {
		return nil, fmt.Errorf("write %s through the mount: %w", lastFile, err)
	}
	return data, nil
}

// checkBucket reads lastFile straight from S3 with the newest key and
// counts the objects the load left.
func (d *demo) checkBucket(ctx context.Context, k keys.Keys, want []byte) error {
	cl := d.s3.Client(k)
	out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(lastFile)})
	if err != nil {
		return fmt.Errorf("%s not in the bucket after NodeUnpublishVolume: %w", lastFile, err)
	}
	got, err := io.ReadAll(out.Body)
	_ = out.Body.Close()
	if err != nil {
		return fmt.Errorf("read %s from S3: %w", lastFile, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s in the bucket: %d bytes that differ from the %d written", lastFile, len(got), len(want))
	}
	n := 0
	for pages := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list the bucket: %w", err)
		}
		n += len(page.Contents)
	}
	fmt.Printf("demo: bucket read with the newest key: %d objects; %s (%d MiB, written just before the unpublish) intact\n", n, lastFile, len(want)>>20)
	return nil
}

// checkUnpublished checks what NodeUnpublishVolume promises.
func (d *demo) checkUnpublished(ctx context.Context) error {
	if isMountPoint(d.pod.target) {
		return fmt.Errorf("%s is still a mount point after NodeUnpublishVolume", d.pod.target)
	}
	if mps := csiproc.MountsUnder(d.dir); len(mps) > 0 {
		return fmt.Errorf("mounts left after NodeUnpublishVolume: %v", mps)
	}
	if _, err := os.Lstat(d.sidecar.socket); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pod socket %s left after NodeUnpublishVolume (%w)", d.sidecar.socket, err)
	}
	infos, err := (&supervisor.Client{Path: d.node.SupervisorSocket()}).List(ctx)
	if err != nil {
		return fmt.Errorf("supervisor list: %w", err)
	}
	if len(infos) > 0 {
		return fmt.Errorf("supervisor still runs %d FUSE servers after NodeUnpublishVolume", len(infos))
	}
	if pids := fuseServers(d.dir); len(pids) > 0 {
		return fmt.Errorf("rekey-fuse processes left after NodeUnpublishVolume: %v", pids)
	}
	return nil
}

// fuseServers returns the rekey-fuse processes of this run.
func fuseServers(dir string) []int {
	var out []int
	for _, pid := range csiproc.Pids(dir) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && filepath.Base(string(bytes.SplitN(b, []byte{0}, 2)[0])) == "rekey-fuse" {
			out = append(out, pid)
		}
	}
	return out
}

// checkNoLeak looks for every secret key of the run in the argv and
// environment of the run's processes and in its log files.
func (d *demo) checkNoLeak() error {
	var places []string
	for _, pid := range csiproc.Pids(d.dir) {
		for _, f := range []string{"cmdline", "environ"} {
			places = append(places, filepath.Join("/proc", strconv.Itoa(pid), f))
		}
	}
	logs, _ := filepath.Glob(filepath.Join(d.dir, "*.log"))
	places = append(places, logs...)
	for _, p := range places {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process exited meanwhile
		}
		for _, k := range d.issued {
			if bytes.Contains(b, []byte(k.SecretAccessKey)) {
				return fmt.Errorf("a secret key appears in %s", p)
			}
		}
	}
	fmt.Printf("demo: no secret key in the argv or environment of %d processes or in %d log files\n", (len(places)-len(logs))/2, len(logs))
	return nil
}
