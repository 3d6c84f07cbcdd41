package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
)

// The objects of the scenario are examples/namespace-label and
// examples/annotation, applied through the overlay tests/e2e/apps (MinIO's
// endpoint, the first keys, the load generator as the app), plus two
// e2e-only pods:
//   - namespace rekey-demo is labelled for injection and runs the Deployment
//     "writer" (sidecar injected), Secret bucket-keys (akId/akSecret);
//   - namespace rekey-demo-annotated is not: its Deployment "reader" opts in
//     with the pod annotation rekey.dev/inject: "true", Secret bucket-keys
//     with csi-s3 style keys (accessKeyID/secretAccessKey); its pod "inline"
//     (e2e only) opts in the same way and mounts an inline CSI volume;
//   - namespace "plain" (e2e only) runs the pod "plain" without the sidecar
//     (rotation through kubelet's republish) on the Secret of rekey-demo.
//
// Every rotation writes both Secrets.
const (
	appNS       = "rekey-demo"
	annotatedNS = "rekey-demo-annotated"
	plainNS     = "plain"
	plainPod    = "plain"
	inlinePod   = "inline"
	irsaNS      = "rekey-demo-irsa"
	appsDir     = "tests/e2e/apps"
)

// The volumes the rotations watch, by the volume ID their FUSE server reports.
const (
	writerVolume = "rekey-demo-bucket"           // examples/namespace-label
	readerVolume = "rekey-demo-annotated-bucket" // examples/annotation
	plainVolume  = "e2e-plain"
	inlineVolume = "inline"                 // kubelet names it csi-<hash>
	irsaVolume   = "rekey-demo-irsa-bucket" // examples/irsa
)

// firstKeys are the keys tests/e2e/apps puts into the Secrets; the scenario
// creates this MinIO user before applying them.
var firstKeys = keys.Keys{AccessKeyID: "E2EEXAMPLEKEY0001", SecretAccessKey: "e2e-example-secret-0001"} //nolint:gosec // throwaway keys of the e2e MinIO

// report collects the numbers the run prints at the end.
type report struct {
	rotations []rotation
}

type rotation struct {
	written time.Duration // Secret update → kubelet rewrote the writer pod's projected Secret
	// Secret update → swap applied, and who applied it, by volume.
	swap   map[string]time.Duration
	source map[string]string
}

func scenario(ctx context.Context, o options, c *Cluster) error {
	var r report
	t := time.Now()
	if err := install(ctx, o, c); err != nil {
		return fmt.Errorf("step 1, install: %w", err)
	}
	logf("step 1: rekey installed from tests/e2e/overlay (manifests/default) in %.1fs", time.Since(t).Seconds())
	// MinIO's OpenID config reads the API server's discovery document and
	// keys without credentials, as a cloud's STS does.
	if _, err := c.kubectl(ctx, "create", "clusterrolebinding", "e2e-service-account-issuer-discovery",
		"--clusterrole=system:service-account-issuer-discovery", "--group=system:unauthenticated"); err != nil {
		return fmt.Errorf("step 1: %w", err)
	}
	m, err := startMinIO(ctx, c, o.repo)
	if err != nil {
		return fmt.Errorf("step 1, MinIO: %w", err)
	}
	logf("step 1: MinIO on %s, bucket %s", m.Endpoint, m.Bucket)

	cur := firstKeys
	if err := m.IssueKeys(ctx, cur); err != nil {
		return err
	}
	t = time.Now()
	if err := applyApps(ctx, o, c, m); err != nil {
		return fmt.Errorf("step 2, apps: %w", err)
	}
	writer, err := c.kubectl(ctx, "-n", appNS, "get", "pod", "-l", "app=writer", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return err
	}
	injected, _ := c.kubectl(ctx, "-n", appNS, "get", "pod", writer, "-o", `jsonpath={.metadata.annotations.rekey\.dev/status} {.spec.initContainers[*].name}`)
	if !strings.Contains(injected, "injected") || !strings.Contains(injected, "rekey-sidecar") {
		return fmt.Errorf("step 2: pod %s was not injected: %q", writer, injected)
	}
	reader, err := c.kubectl(ctx, "-n", annotatedNS, "get", "pod", "-l", "app=reader", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return err
	}
	for _, p := range []string{reader, inlinePod} {
		ann, _ := c.kubectl(ctx, "-n", annotatedNS, "get", "pod", p, "-o", `jsonpath={.metadata.annotations.rekey\.dev/status} {.spec.initContainers[*].name}`)
		if !strings.Contains(ann, "injected") || !strings.Contains(ann, "rekey-sidecar") {
			return fmt.Errorf("step 2: pod %s/%s (annotation) was not injected: %q", annotatedNS, p, ann)
		}
	}
	plainInit, _ := c.kubectl(ctx, "-n", plainNS, "get", "pod", plainPod, "-o", `jsonpath={.spec.initContainers[*].name}`)
	if plainInit != "" {
		return fmt.Errorf("step 2: pod %s got init containers %q", plainPod, plainInit)
	}
	logf("step 2: examples applied through %s, pods Running in %.1fs; %s (namespace label, PVC), %s (annotation, PVC) and %s (annotation, inline volume) have the sidecar; %s has none",
		appsDir, time.Since(t).Seconds(), writer, reader, inlinePod, plainPod)
	irsaWriter, err := c.kubectl(ctx, "-n", irsaNS, "get", "pod", "-l", "app=writer", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return err
	}
	irsa0, err := irsaMounted(ctx, c, irsaWriter)
	if err != nil {
		return fmt.Errorf("step 2, irsa: %w", err)
	}
	pods := []podRef{{appNS, writer}, {annotatedNS, reader}, {plainNS, plainPod}, {annotatedNS, inlinePod}, {irsaNS, irsaWriter}}
	prov, err := provisionStart(ctx, o, c, m) // tests/e2e/provisioning.go
	if err != nil {
		return fmt.Errorf("step 2c, provisioning: %w", err)
	}
	pods = append(pods, prov.pod)
	writerUID, err := c.kubectl(ctx, "-n", appNS, "get", "pod", writer, "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return err
	}
	if err := waitOps(ctx, c, pods, 20); err != nil {
		return fmt.Errorf("step 2: %w", err)
	}

	// Step 3 (and 5: plain rotates through republish in the same rounds).
	for i := 0; i < o.rounds; i++ {
		next, err := m.Issue(ctx)
		if err != nil {
			return err
		}
		updated := time.Now()
		rot, err := rotate(ctx, c, writerUID, next)
		if err != nil {
			return fmt.Errorf("step 3, rotation %d: %w", i+1, err)
		}
		if err := rekeyWaitGate(ctx, o, c, updated); err != nil { // tests/e2e/status.go
			return fmt.Errorf("step 3, rotation %d: %w", i+1, err)
		}
		if err := m.Revoke(ctx, cur); err != nil {
			return err
		}
		cur = next
		r.rotations = append(r.rotations, rot)
		logf("step 3: rotation %d: Secret update → projected files rewritten %s → swap: %s; old key revoked",
			i+1, rot.written.Round(time.Millisecond), rot)
	}
	time.Sleep(3 * time.Second) // I/O on the last key, after its predecessor's revocation
	if err := checkNoErrors(ctx, c, pods, "step 3+5 (rotations)"); err != nil {
		return err
	}
	if err := statusTable(ctx, o, c); err != nil {
		return fmt.Errorf("step 3: %w", err)
	}
	for _, p := range []podRef{{appNS, writer}, {annotatedNS, reader}, {annotatedNS, inlinePod}} {
		if err := sidecarSummary(ctx, c, p); err != nil {
			return fmt.Errorf("step 3: %w", err)
		}
	}
	if err := irsaRefreshed(ctx, c, irsa0); err != nil {
		return fmt.Errorf("step 2b, irsa: %w", err)
	}

	// Step 4: an invalid key.
	if err := invalidKey(ctx, c, writer, pods); err != nil {
		return fmt.Errorf("step 4: %w", err)
	}
	if err := refusedNotSafe(ctx, o, c, writer); err != nil { // tests/e2e/status.go
		return fmt.Errorf("step 4: %w", err)
	}
	if err := checkNoErrors(ctx, c, pods, "step 4 (invalid key)"); err != nil {
		return err
	}
	// Back to a valid key (still cur, which was never revoked) so that the
	// sidecar and republish stop reporting.
	if err := applySecret(ctx, c, cur); err != nil {
		return err
	}

	// Step 6: kill -9 of the driver, then of the supervisor.
	for _, role := range []string{"driver", "supervisor"} {
		if err := killRole(ctx, c, role); err != nil {
			return fmt.Errorf("step 6, %s: %w", role, err)
		}
		if err := waitOps(ctx, c, pods, 20); err != nil {
			return fmt.Errorf("step 6, after killing the %s: %w", role, err)
		}
		if err := checkNoErrors(ctx, c, pods, "step 6 (kill -9 "+role+")"); err != nil {
			return err
		}
	}
	// The rotation path still works after both restarts.
	next, err := m.Issue(ctx)
	if err != nil {
		return err
	}
	updated := time.Now()
	rot, err := rotate(ctx, c, writerUID, next)
	if err != nil {
		return fmt.Errorf("step 6, rotation after the restarts: %w", err)
	}
	if err := rekeyWaitGate(ctx, o, c, updated); err != nil {
		return fmt.Errorf("step 6, rotation after the restarts: %w", err)
	}
	if err := m.Revoke(ctx, cur); err != nil {
		return err
	}
	cur = next
	logf("step 6: rotation after the restarts: %s", rot)
	time.Sleep(2 * time.Second)
	if err := checkNoErrors(ctx, c, pods, "step 6 (rotation after restarts)"); err != nil {
		return err
	}
	// A FUSE server killed: the plain pod's (keys from republish), then the
	// writer's (keys from its sidecar, the newest from key custody).
	for _, k := range []struct {
		volume string
		pod    podRef
	}{{plainVolume, podRef{plainNS, plainPod}}, {writerVolume, podRef{appNS, writer}}} {
		if err := killFUSEServer(ctx, c, pods, k.volume, k.pod); err != nil {
			return fmt.Errorf("step 6, FUSE server of %s: %w", k.pod.name, err)
		}
	}

	if pods, err = provisionFinish(ctx, o, c, m, prov, pods); err != nil { // before 6b: see tests/e2e/provisioning.go
		return fmt.Errorf("step 6a, provisioning: %w", err)
	}
	// Step 6b: roll the node plugin to another version and back, under
	// load, with a key rotation during each rollout.
	rotateOnce := func() error {
		next, err := m.Issue(ctx)
		if err != nil {
			return err
		}
		updated := time.Now()
		rot, err := rotate(ctx, c, writerUID, next)
		if err != nil {
			return err
		}
		// Revoke only once every mount runs the new key, as in step 3:
		// during a rollout some mounts swap through the other version.
		if err := rekeyWaitGate(ctx, o, c, updated); err != nil {
			return err
		}
		if err := m.Revoke(ctx, cur); err != nil {
			return err
		}
		cur = next
		logf("step 6b: rotation during the rollout: %s; old key revoked", rot)
		return nil
	}
	if err := upgradeAndBack(ctx, o, c, pods, rotateOnce); err != nil {
		return fmt.Errorf("step 6b: %w", err)
	}

	// Step 7: delete the pods.
	if err := deletePods(ctx, c); err != nil {
		return fmt.Errorf("step 7: %w", err)
	}
	// Step 7b: the cert-manager path (tests/e2e/certmanager.go).
	if err := certManagerStep(ctx, o, c); err != nil {
		return fmt.Errorf("step 7b, cert-manager: %w", err)
	}
	// Step 8: uninstall; the cluster itself is torn down by the caller.
	if _, err := c.kubectl(ctx, "delete", "-k", filepath.Join(o.repo, "tests/e2e/overlay"), "--wait=true", "--timeout=120s"); err != nil {
		return fmt.Errorf("step 8, uninstall: %w", err)
	}
	logf("step 8: rekey uninstalled")
	r.print()
	return nil
}

func (r report) print() {
	var f, fs []time.Duration
	sources := map[string]int{}
	for _, x := range r.rotations {
		f = append(f, x.written)
		fs = append(fs, x.swap[writerVolume]-x.written)
		sources[x.source[writerVolume]]++
	}
	fmt.Printf("\nE2E RESULT: PASS\n")
	for _, v := range []struct{ volume, what string }{
		{writerVolume, "sidecar pod (examples/namespace-label)"},
		{readerVolume, "sidecar pod (examples/annotation)"},
		{plainVolume, "republish pod"},
		{inlineVolume, "annotated pod (inline volume)"},
	} {
		var ds []time.Duration
		for _, x := range r.rotations {
			ds = append(ds, x.swap[v.volume])
		}
		fmt.Printf("  Secret update -> swap, %d rotations, %s: p50 %s  max %s  (%s)\n", len(ds), v.what,
			loadcheck.Percentile(ds, 50).Round(time.Millisecond), loadcheck.Percentile(ds, 100).Round(time.Millisecond), durs(ds))
		if v.volume == writerVolume {
			fmt.Printf("  (writer: kubelet rewrote the projected Secret after p50 %s; projected files -> swap p50 %s max %s (%s); swaps done by %v)\n",
				loadcheck.Percentile(f, 50).Round(time.Millisecond), loadcheck.Percentile(fs, 50).Round(time.Millisecond),
				loadcheck.Percentile(fs, 100).Round(time.Millisecond), durs(fs), sources)
		}
	}
	for _, n := range finalNotes {
		fmt.Println("  " + n)
	}
}

func (r rotation) String() string {
	var parts []string
	for _, v := range []string{writerVolume, readerVolume, plainVolume, inlineVolume} {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", v, r.swap[v].Round(time.Millisecond), r.source[v]))
	}
	return strings.Join(parts, ", ")
}

// finalNotes are the result lines the steps add for the summary.
var finalNotes []string

func note(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	finalNotes = append(finalNotes, s)
	logf("%s", s)
}

func durs(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Round(time.Millisecond).String())
	}
	return strings.Join(s, " ")
}

func install(ctx context.Context, o options, c *Cluster) error {
	if _, err := c.kubectl(ctx, "apply", "-k", filepath.Join(o.repo, "tests/e2e/overlay")); err != nil {
		return err
	}
	// A fresh install: wait for the pods themselves (rollout status is for
	// updates, step 6b).
	for _, app := range []string{"rekey-csi-node", "rekey-webhook"} {
		if err := waitPodsReady(ctx, c, "rekey-system", "app.kubernetes.io/name="+app); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, 60*time.Second, "driver registered with kubelet (CSINode)", func() error {
		out, err := c.kubectl(ctx, "get", "csinode", "localhost", "-o", "jsonpath={.spec.drivers[*].name}")
		if err == nil && !strings.Contains(out, "s3.rekey.dev") {
			err = fmt.Errorf("drivers %q", out)
		}
		return err
	}); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "caBundle of the webhook configuration", func() error {
		out, err := c.kubectl(ctx, "get", "mutatingwebhookconfiguration", "rekey-webhook", "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}")
		if err == nil && len(strings.Fields(out)) < 2 {
			err = errors.New("not set yet")
		}
		return err
	})
}

// waitPodsReady waits until pods with the label selector exist and are Ready.
func waitPodsReady(ctx context.Context, c *Cluster, ns, selector string) error {
	if err := waitFor(ctx, 60*time.Second, "pods "+selector, func() error {
		out, err := c.kubectl(ctx, "-n", ns, "get", "pods", "-l", selector, "-o", "name")
		if err == nil && out == "" {
			err = errors.New("none yet")
		}
		return err
	}); err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, "-n", ns, "wait", "--for=condition=Ready", "pods", "-l", selector, "--timeout=120s"); err != nil {
		return withDescribe(ctx, c, err, ns, "pods")
	}
	return nil
}

func withDescribe(ctx context.Context, c *Cluster, err error, ns, what string) error {
	out, _ := c.kubectl(ctx, "-n", ns, "describe", what)
	return fmt.Errorf("%w\n%s", err, out)
}

// secretYAML is the Secret bucket-keys of both example namespaces with keys
// k, each under the key names its example uses.
func secretYAML(k keys.Keys) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: bucket-keys, namespace: %s}
type: Opaque
stringData:
  akId: %q
  akSecret: %q
---
apiVersion: v1
kind: Secret
metadata: {name: bucket-keys, namespace: %s}
type: Opaque
stringData:
  accessKeyID: %q
  secretAccessKey: %q
`, appNS, k.AccessKeyID, k.SecretAccessKey, annotatedNS, k.AccessKeyID, k.SecretAccessKey)
}

func applySecret(ctx context.Context, c *Cluster, k keys.Keys) error {
	_, err := c.kubectlIn(ctx, secretYAML(k), "apply", "-f", "-")
	return err
}

// applyApps applies tests/e2e/apps (the examples with this machine's
// patches, and the e2e-only pods) and waits until every pod runs.
func applyApps(ctx context.Context, o options, c *Cluster, m *MinIO) error {
	// The path prefixes must exist (pre-mount check): create them.
	for _, p := range []string{"team-a/data", "shared/reports", "e2e/plain", "e2e/inline", "team-b/data"} {
		if _, err := m.run(ctx, "cp", "/etc/hostname", "e2e/"+m.Bucket+"/"+p+"/.keep"); err != nil {
			return err
		}
	}
	// The claims name their volumes (volumeName): the webhook injects for
	// them before the binder has marked them Bound.
	if _, err := c.kubectl(ctx, "apply", "-k", filepath.Join(o.repo, appsDir)); err != nil {
		return err
	}
	for _, pvc := range []podRef{{appNS, "bucket"}, {annotatedNS, "bucket"}, {plainNS, "data"}, {irsaNS, "bucket"}} {
		if _, err := c.kubectl(ctx, "-n", pvc.ns, "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/"+pvc.name, "--timeout=60s"); err != nil {
			return err
		}
	}
	for _, d := range []podRef{{appNS, "writer"}, {annotatedNS, "reader"}, {irsaNS, "writer"}} {
		if _, err := c.kubectl(ctx, "-n", d.ns, "rollout", "status", "deployment/"+d.name, "--timeout=120s"); err != nil {
			return withDescribe(ctx, c, err, d.ns, "pods")
		}
	}
	for _, p := range []podRef{{plainNS, plainPod}, {annotatedNS, inlinePod}} {
		if _, err := c.kubectl(ctx, "-n", p.ns, "wait", "--for=condition=Ready", "pod/"+p.name, "--timeout=120s"); err != nil {
			return withDescribe(ctx, c, err, p.ns, "pods")
		}
	}
	return nil
}

type podRef struct{ ns, name string }

// stats is the load generator's last line.
type stats struct {
	Time       time.Time `json:"time"`
	Ops        int64     `json:"ops"`
	Failed     int64     `json:"failed"`
	Mismatched int64     `json:"mismatched"`
	Errors     []string  `json:"errors"`
}

func podStats(ctx context.Context, c *Cluster, p podRef) (stats, []string, error) {
	out, err := c.kubectl(ctx, "-n", p.ns, "logs", p.name, "-c", "app", "--tail=200")
	if err != nil {
		return stats{}, nil, err
	}
	var last stats
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		var s stats
		if json.Unmarshal([]byte(l), &s) == nil && !s.Time.IsZero() {
			last = s
			errs = append(errs, s.Errors...)
		}
	}
	if last.Time.IsZero() {
		return last, nil, fmt.Errorf("%s/%s: no report yet", p.ns, p.name)
	}
	return last, errs, nil
}

// waitOps waits until every pod completed n more operations.
func waitOps(ctx context.Context, c *Cluster, pods []podRef, n int64) error {
	for _, p := range pods {
		var base int64 = -1
		if err := waitFor(ctx, 60*time.Second, fmt.Sprintf("%d operations in %s/%s", n, p.ns, p.name), func() error {
			s, _, err := podStats(ctx, c, p)
			if err != nil {
				return err
			}
			if base < 0 {
				base = s.Ops
			}
			if s.Ops < base+n {
				return fmt.Errorf("%d operations so far", s.Ops-base)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// checkNoErrors fails if a pod's load generator counted a failed or
// mismatched operation; otherwise it notes the counts.
func checkNoErrors(ctx context.Context, c *Cluster, pods []podRef, step string) error {
	var parts []string
	for _, p := range pods {
		s, errs, err := podStats(ctx, c, p)
		if err != nil {
			return err
		}
		if s.Failed > 0 || s.Mismatched > 0 {
			return fmt.Errorf("%s: %s/%s: %d failed operations, %d mismatched bytes after %d operations: %v", step, p.ns, p.name, s.Failed, s.Mismatched, s.Ops, errs)
		}
		parts = append(parts, fmt.Sprintf("%s/%s %d ops, 0 failed, 0 mismatched", p.ns, p.name, s.Ops))
	}
	note("%s: I/O errors: %s", step, strings.Join(parts, "; "))
	return nil
}

// servers returns the control sockets of the node's FUSE servers by volume ID.
func servers(c *Cluster) (map[string]string, error) {
	dir := filepath.Join(c.KubeletRoot(), "plugins/s3.rekey.dev/mounts")
	ents, err := filepath.Glob(filepath.Join(dir, "*.sock"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range ents {
		st, err := status(context.Background(), s)
		if err != nil {
			continue
		}
		out[st.GetVolumeId()] = s
	}
	return out, nil
}

func status(ctx context.Context, sock string) (*credentialsv1.StatusResponse, error) {
	cl, closer, err := control.Dial(sock)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return cl.Status(ctx, &credentialsv1.StatusRequest{})
}

// rotate writes k into the Secrets and waits until every FUSE server uses
// it, asking their control sockets; it returns Secret update → swap applied
// (the server's own time of the swap) by volume.
func rotate(ctx context.Context, c *Cluster, writerUID string, k keys.Keys) (rotation, error) {
	data := filepath.Join(c.KubeletRoot(), "pods", writerUID, "volumes/kubernetes.io~projected/rekey-source-0/..data")
	socks, err := servers(c)
	if err != nil {
		return rotation{}, err
	}
	for v, sock := range socks {
		if strings.HasPrefix(v, "csi-") { // the inline volume: kubelet's handle
			socks[inlineVolume] = sock
		}
	}
	vols := []string{writerVolume, readerVolume, plainVolume, inlineVolume}
	for _, v := range vols {
		if socks[v] == "" {
			return rotation{}, fmt.Errorf("no FUSE server for volume %s (have %v)", v, socks)
		}
	}
	want := k.Fingerprint()
	updated := time.Now()
	if err := applySecret(ctx, c, k); err != nil {
		return rotation{}, err
	}
	rot := rotation{swap: map[string]time.Duration{}, source: map[string]string{}}
	// Poll all servers every 20 ms. The swap time is the server's own time
	// of the APPLIED swap (Status.last_applied, which a later identical push
	// from the other path does not hide); without one, the first poll that
	// saw the new fingerprint bounds it from above.
	deadline := time.Now().Add(120 * time.Second)
	for len(rot.swap) < len(vols) {
		if time.Now().After(deadline) {
			return rot, fmt.Errorf("timed out waiting for the swap on %d of %d volumes (%v)", len(vols)-len(rot.swap), len(vols), rot)
		}
		if ctx.Err() != nil {
			return rot, ctx.Err()
		}
		for _, v := range vols {
			if _, ok := rot.swap[v]; ok {
				continue
			}
			st, err := status(ctx, socks[v])
			if err != nil || st.GetFingerprint() != want {
				continue
			}
			// last_applied is the swap that put these keys in use, even
			// if the other path's no-op came after it.
			if la := st.GetLastApplied(); la.GetResult() == credentialsv1.SwapResult_SWAP_RESULT_APPLIED && la.GetTime().AsTime().After(updated) {
				rot.swap[v], rot.source[v] = la.GetTime().AsTime().Sub(updated), la.GetSource()
			} else {
				ls := st.GetLastSwap()
				rot.swap[v], rot.source[v] = time.Since(updated), "first seen; last "+ls.GetSource()+" "+ls.GetResult().String()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	var fi syscall.Stat_t
	if err := syscall.Lstat(data, &fi); err == nil {
		rot.written = time.Unix(fi.Mtim.Unix()).Sub(updated)
	}
	return rot, nil
}

// sidecarSummary checks in the sidecar's log that it found its FUSE server
// and notes the results of its pushes (a key that republish applied first
// is UNCHANGED for the sidecar).
func sidecarSummary(ctx context.Context, c *Cluster, p podRef) error {
	out, err := c.kubectl(ctx, "-n", p.ns, "logs", p.name, "-c", "rekey-sidecar")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "FUSE server socket found") {
		return fmt.Errorf("the sidecar of %s/%s never found its FUSE server's socket:\n%s", p.ns, p.name, out)
	}
	results := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "keys in use") {
			continue
		}
		for _, f := range strings.Fields(l) {
			if r, ok := strings.CutPrefix(f, "result="); ok {
				results[strings.Trim(r, `"`)]++
			}
		}
	}
	note("step 3: sidecar of %s/%s: socket found; its Swap results %v", p.ns, p.name, results)
	return nil
}

// invalidKey puts keys MinIO does not know into the Secret and waits for the
// Warning Event on the writer pod.
func invalidKey(ctx context.Context, c *Cluster, writer string, pods []podRef) error {
	bad := keys.Keys{AccessKeyID: "E2EINVALID" + strings.ToUpper(randHex(4)), SecretAccessKey: randHex(20)}
	t := time.Now()
	if err := applySecret(ctx, c, bad); err != nil {
		return err
	}
	var line string
	if err := waitFor(ctx, 120*time.Second, "CredentialRefreshFailed Event on "+writer, func() error {
		out, err := c.kubectl(ctx, "-n", appNS, "describe", "pod", writer)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "failed to refresh ak/sk for") {
				line = strings.Join(strings.Fields(l), " ")
				return nil
			}
		}
		return errors.New("not in kubectl describe pod yet")
	}); err != nil {
		return err
	}
	note("step 4: invalid key: after %.1fs `kubectl describe pod %s` shows: %s", time.Since(t).Seconds(), writer, line)
	if out, err := c.kubectl(ctx, "-n", plainNS, "describe", "pod", plainPod); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "failed to refresh ak/sk for") {
				note("step 4: republish pod: %s", strings.Join(strings.Fields(l), " "))
				break
			}
		}
	}
	time.Sleep(3 * time.Second)
	return waitOps(ctx, c, pods, 10)
}

// rekeyProcs returns the PIDs of processes whose command line starts with
// the given arguments (e.g. "/rekey-csi", "driver").
func rekeyProcs(prefix ...string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < len(prefix) {
			continue
		}
		match := true
		for i, p := range prefix {
			if args[i] != p {
				match = false
			}
		}
		if match {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killRole SIGKILLs the driver or the supervisor process of the node plugin
// and waits until a new one runs.
func killRole(ctx context.Context, c *Cluster, role string) error {
	old := rekeyProcs("/rekey-csi", role)
	if len(old) != 1 {
		return fmt.Errorf("want one %s process, found %v", role, old)
	}
	if err := syscall.Kill(old[0], syscall.SIGKILL); err != nil {
		return err
	}
	t := time.Now()
	if err := waitFor(ctx, 90*time.Second, "a new "+role, func() error {
		now := rekeyProcs("/rekey-csi", role)
		if len(now) != 1 || now[0] == old[0] {
			return fmt.Errorf("%s processes %v", role, now)
		}
		return nil
	}); err != nil {
		return err
	}
	note("step 6: kill -9 %s (pid %d): a new one runs after %.1fs", role, old[0], time.Since(t).Seconds())
	return nil
}

// killFUSEServer SIGKILLs the FUSE server of volume, mounted in pod p:
// the supervisor resumes it on its live connection, the pod gets a
// FUSEServerResumed Event, and no application of any pod sees an error.
func killFUSEServer(ctx context.Context, c *Cluster, pods []podRef, volume string, p podRef) error {
	socks, err := servers(c)
	if err != nil {
		return err
	}
	st, err := status(ctx, socks[volume])
	if err != nil {
		return err
	}
	// Status answers the server's PID in the supervisor container's PID
	// namespace; find the host PID whose innermost NSpid matches.
	pid := 0
	for _, hp := range rekeyProcs("/rekey-fuse") {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", hp))
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" && f[len(f)-1] == strconv.Itoa(int(st.GetPid())) {
				pid = hp
			}
		}
	}
	if pid == 0 {
		return fmt.Errorf("no rekey-fuse process with PID %d in its namespace", st.GetPid())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	killed := time.Now()
	var line string
	if err := waitFor(ctx, 60*time.Second, "FUSEServerResumed Event on "+p.name, func() error {
		out, err := c.kubectl(ctx, "-n", p.ns, "describe", "pod", p.name)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "FUSEServerResumed") {
				line = strings.Join(strings.Fields(l), " ")
				return nil
			}
		}
		return errors.New("no Event yet")
	}); err != nil {
		return err
	}
	evented := time.Since(killed)
	after, err := status(ctx, socks[volume])
	if err != nil {
		return fmt.Errorf("the resumed server does not answer on its socket: %w", err)
	}
	if after.GetPid() == st.GetPid() || after.GetFingerprint() != st.GetFingerprint() {
		return fmt.Errorf("after the kill: pid %d (was %d), keys %s (were %s)", after.GetPid(), st.GetPid(), after.GetFingerprint(), st.GetFingerprint())
	}
	// The application goes on: more operations, none failed, in every pod.
	if err := waitOps(ctx, c, []podRef{p}, 20); err != nil {
		return err
	}
	if err := checkNoErrors(ctx, c, pods, "step 6 (FUSE server of "+p.name+" killed)"); err != nil {
		return err
	}
	note("step 6: kill -9 FUSE server of %s/%s (host pid %d): resumed as pid %d on the same keys, Event after %.1fs: %s; the app went on with 0 failed operations",
		p.ns, p.name, pid, after.GetPid(), evented.Seconds(), line)
	return nil
}

// deletePods deletes the apps and checks that nothing of them is left on the
// node: no FUSE mount and no rekey-fuse process.
func deletePods(ctx context.Context, c *Cluster) error {
	t := time.Now()
	if _, err := c.kubectl(ctx, "delete", "namespace", appNS, plainNS, annotatedNS, irsaNS, "--wait=true", "--timeout=180s"); err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, "delete", "pv", writerVolume, readerVolume, plainVolume, irsaVolume, "--wait=true", "--timeout=60s"); err != nil {
		return err
	}
	var fuse []string
	for _, m := range mountsUnder(c.KubeletRoot()) {
		if strings.HasPrefix(m[1], "fuse") {
			fuse = append(fuse, m[0])
		}
	}
	procs := rekeyProcs("/rekey-fuse")
	if len(fuse) > 0 || len(procs) > 0 {
		return fmt.Errorf("left after deleting the pods: FUSE mounts %v, rekey-fuse processes %v", fuse, procs)
	}
	note("step 7: pods deleted in %.1fs: no FUSE mount and no rekey-fuse process left", time.Since(t).Seconds())
	return nil
}

// irsaMounted checks the STS volume of examples/irsa right after its pod
// started: kubelet passed the pod's service-account token, the driver
// exchanged it at MinIO's STS (AssumeRoleWithWebIdentity) and the FUSE server
// runs on temporary keys with an expiry. It returns that first Status.
func irsaMounted(ctx context.Context, c *Cluster, pod string) (*credentialsv1.StatusResponse, error) {
	socks, err := servers(c)
	if err != nil {
		return nil, err
	}
	if socks[irsaVolume] == "" {
		return nil, fmt.Errorf("no FUSE server for volume %s (have %v)", irsaVolume, socks)
	}
	st, err := status(ctx, socks[irsaVolume])
	if err != nil {
		return nil, err
	}
	if st.GetAuthType() != "irsa" || st.GetRoleArn() != stsRoleARN || st.GetExpiration() == nil {
		return nil, fmt.Errorf("status of %s: auth type %q, role %q, expiration %v; want irsa, %s and temporary keys",
			irsaVolume, st.GetAuthType(), st.GetRoleArn(), st.GetExpiration(), stsRoleARN)
	}
	note("step 2b: irsa volume (examples/irsa, MinIO AssumeRoleWithWebIdentity with the pod's service-account token): %s/%s mounted, temporary keys %s expire %s (in %s); last swap %s %s",
		irsaNS, pod, st.GetFingerprint(), st.GetExpiration().AsTime().Format(time.RFC3339),
		time.Until(st.GetExpiration().AsTime()).Round(time.Second), st.GetLastSwap().GetSource(), st.GetLastSwap().GetResult())
	return st, nil
}

// irsaRefreshed waits until a republish of the irsa volume exchanged the
// token again (tests/e2e/overlay: short --sts-duration, a refresh window
// just below it) and the FUSE server swapped to the new temporary keys.
func irsaRefreshed(ctx context.Context, c *Cluster, first *credentialsv1.StatusResponse) error {
	socks, err := servers(c)
	if err != nil {
		return err
	}
	var st *credentialsv1.StatusResponse
	if err := waitFor(ctx, 120*time.Second, "a republish swapping new temporary keys into "+irsaVolume, func() error {
		st, err = status(ctx, socks[irsaVolume])
		if err != nil {
			return err
		}
		ls := st.GetLastApplied()
		if st.GetFingerprint() == first.GetFingerprint() || ls.GetSource() != "csi-irsa" || ls.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
			return fmt.Errorf("fingerprint %s, last swap %s %s %s", st.GetFingerprint(), ls.GetSource(), ls.GetResult(), ls.GetMessage())
		}
		return nil
	}); err != nil {
		return err
	}
	note("step 2b: irsa: kubelet's republish refreshed the temporary keys: %s -> %s (generation %d -> %d, expiry %s -> %s, swap by %s)",
		first.GetFingerprint(), st.GetFingerprint(), first.GetGeneration(), st.GetGeneration(),
		first.GetExpiration().AsTime().Format(time.TimeOnly), st.GetExpiration().AsTime().Format(time.TimeOnly), st.GetLastApplied().GetSource())
	return nil
}
