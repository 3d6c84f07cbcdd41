package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"

	"rekey.dev/rekey/internal/atomicwriter"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/csiproc"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

const bucket = "demo"

// demo is one running setup: the S3 server, the node plugin's processes,
// kubelet's side of it, the pod with its mounted volume, and the sidecar.
type demo struct {
	cfg     Config
	log     logr.Logger
	dir     string
	s3      *fakes3.Server
	node    *csiproc.Node
	init    *csiproc.Proc // rekey-csi init, parent of the supervisor
	driver  *csiproc.Proc
	kubelet *kubelet
	pod     *pod
	sidecar *sidecarProc
	secrets *atomicwriter.Writer
	initial keys.Keys
	issued  []keys.Keys // every key pair the run used, for the leak check
	publish time.Duration
	failed  bool // keeps the temporary directory for its logs
	hung    bool // a request on the mount is not answered: no unpublish
	// refreshes counts the projected Secret's contents so far: the
	// sidecar's refreshes_total{result="success"} must reach it.
	refreshes int
	// metricsAddr is the driver's /metrics endpoint (host:port).
	metricsAddr string
	// probe is probeFile's contents, read after each kill.
	probe []byte
}

func start(ctx context.Context, cfg Config, log logr.Logger) (_ *demo, err error) {
	d := &demo{cfg: cfg, log: log}
	if d.dir, err = os.MkdirTemp("", "rekey-demo-"); err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	defer func() {
		if err != nil {
			d.failed = true
			d.close()
		}
	}()

	d.initial = fakes3.NewKeys("AKDEMO")
	d.issued = append(d.issued, d.initial)
	if d.s3, err = fakes3.Start(d.initial, bucket); err != nil {
		return nil, fmt.Errorf("S3 server: %w", err)
	}
	fmt.Printf("demo: working in %s ($TMP)\n", d.dir)
	fmt.Printf("demo: S3 server with SigV4 checking on %s, bucket %q\n", d.s3.URL, bucket)

	// The node DaemonSet's two containers: the supervisor under rekey-csi
	// init (its PID 1) and the driver, registering with "kubelet" and
	// serving its metrics.
	if d.metricsAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	d.node = &csiproc.Node{Binary: cfg.CSIBinary, FuseBinary: cfg.FuseBinary, Dir: d.dir, NodeID: "demo-node",
		UnderInit: true, Register: true, DriverFlags: []string{"-v=2", "--http-addr=" + d.metricsAddr, "--socket-uid=0"},
		DriverLog: filepath.Join(d.dir, "driver.log")}
	if d.init, err = d.node.StartSupervisor(ctx); err != nil {
		return nil, err
	}
	fmt.Printf("demo: supervisor running under `rekey-csi init` (pid %d), state in %s\n", d.init.Pid(), d.node.StateDir())
	if d.driver, err = d.node.StartDriver(ctx); err != nil {
		return nil, err
	}
	info, err := register(ctx, d.node.Kubelet())
	if err != nil {
		return nil, err
	}
	fmt.Printf("demo: driver (pid %d) registered with kubelet as %s, endpoint %s\n", d.driver.Pid(), info.GetName(), info.GetEndpoint())
	var lines []string
	if d.kubelet, lines, err = newKubelet(ctx, d.node.Kubelet(), info.GetEndpoint()); err != nil {
		return nil, err
	}
	for _, l := range lines {
		fmt.Println("demo: " + l)
	}

	// The pod: kubelet creates its volume directories, the projected
	// Secret, then calls NodePublishVolume with the Secret's keys.
	if d.pod, err = newPod(d.node.Kubelet()); err != nil {
		return nil, err
	}
	if d.secrets, err = atomicwriter.New(d.pod.secret); err != nil {
		return nil, err
	}
	if err := d.writeSecret(d.initial); err != nil {
		return nil, err
	}
	if d.publish, err = d.kubelet.publish(ctx, publishRequest(d.pod, d.s3.URL, d.initial)); err != nil {
		return nil, err
	}
	fmt.Printf("demo: NodePublishVolume mounted s3://%s at %s in %s\n", bucket, shorten(d.pod.target, d.dir), d.publish.Round(100*time.Microsecond))
	if !isMountPoint(d.pod.target) {
		return nil, fmt.Errorf("NodePublishVolume returned but %s is not a mount point", d.pod.target)
	}

	if d.sidecar, err = startSidecar(ctx, cfg, d.dir, d.pod); err != nil {
		return nil, err
	}
	fmt.Printf("demo: sidecar (pid %d) watches the projected Secret and the pod's %s emptyDir\n", d.sidecar.proc.Pid(), contract.SocketVolumeName)
	st, err := d.sidecar.waitSocket(ctx)
	if err != nil {
		return nil, err
	}
	if st.GetFingerprint() != d.initial.Fingerprint() {
		return nil, fmt.Errorf("FUSE server runs keys %s, want the published %s", st.GetFingerprint(), d.initial.Fingerprint())
	}
	fmt.Printf("demo: FUSE server (pid %d) answers on the pod's socket %s, keys %s\n", st.GetPid(), shorten(d.sidecar.socket, d.dir), st.GetFingerprint())
	d.refreshes = 1
	if err := d.sidecar.waitReady(ctx, d.refreshes); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *demo) writeSecret(k keys.Keys) error {
	if err := d.secrets.WriteStrings(secretData(k)); err != nil {
		return fmt.Errorf("update the projected Secret: %w", err)
	}
	return nil
}

// close stops whatever still runs, gently first, and removes the
// temporary directory unless the run failed or --keep.
func (d *demo) close() {
	stop := func(name string, p *csiproc.Proc) {
		if err := p.Stop(10 * time.Second); err != nil {
			d.log.V(1).Info("stopped", "process", name, "err", err.Error())
		}
	}
	if d.sidecar != nil {
		stop("rekey-sidecar", d.sidecar.proc)
		d.sidecar.close()
	}
	if d.kubelet != nil {
		if d.pod != nil && !d.hung && isMountPoint(d.pod.target) {
			// A run that failed on the way: unpublish as kubelet would.
			if _, err := d.kubelet.unpublish(context.Background(), d.pod); err != nil {
				fmt.Println("demo: cleanup:", err)
			}
		}
		d.kubelet.close()
	}
	if d.driver != nil {
		stop("rekey-csi driver", d.driver)
	}
	if d.init != nil {
		stop("rekey-csi init", d.init)
	}
	if d.dir != "" {
		// After a failure: FUSE servers outlive their supervisor by design,
		// and a dead server leaves its mount behind.
		csiproc.Reap(d.dir)
	}
	if d.s3 != nil {
		_ = d.s3.Close()
	}
	switch {
	case d.dir == "":
	case d.failed || d.cfg.KeepDir:
		fmt.Printf("demo: kept %s (logs: supervisor.log, driver.log, sidecar.log)\n", d.dir)
	default:
		_ = os.RemoveAll(d.dir)
	}
}

// sources is the sidecar's --sources value, as the webhook writes it.
func sources(p *pod) (string, error) {
	b, err := json.Marshal([]contract.Source{{VolumeID: volumeID, VolumeName: "data", AuthType: contract.AuthTypeSecret, SecretDir: p.secret}})
	if err != nil {
		return "", fmt.Errorf("sidecar sources: %w", err)
	}
	return string(b), nil
}

// shorten abbreviates paths below the temporary directory for printing.
func shorten(path, dir string) string {
	if rel, err := filepath.Rel(dir, path); err == nil {
		return filepath.Join("$TMP", rel)
	}
	return path
}
