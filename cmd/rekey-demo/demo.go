package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"rekey.dev/rekey/fuseserver"
	"rekey.dev/rekey/internal/atomicwriter"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
)

const bucket = "demo"

// demo is one running setup: S3 server, mounted FUSE server, control client.
type demo struct {
	log     logr.Logger
	dir     string
	mnt     string
	s3      *fakes3.Server
	child   *exec.Cmd
	exited  chan error
	sidecar *exec.Cmd
	sideErr chan error
	secrets *atomicwriter.Writer
	initial keys.Keys

	mu      sync.Mutex
	events  []fuseserver.EventRecord
	applied map[string]chan struct{} // fingerprint → closed when a swap to it is applied
}

func start(ctx context.Context, cfg Config, log logr.Logger) (_ *demo, err error) {
	d := &demo{log: log, exited: make(chan error, 1), sideErr: make(chan error, 1), applied: map[string]chan struct{}{}}
	if d.dir, err = os.MkdirTemp("", "rekey-demo-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.close(cfg.KeepDir)
		}
	}()
	d.mnt = filepath.Join(d.dir, "mnt")
	staging := filepath.Join(d.dir, "staging")
	sockDir := filepath.Join(d.dir, "sockets")
	sock := filepath.Join(sockDir, "demo-volume.sock")
	for _, p := range []string{d.mnt, sockDir} {
		if err := os.Mkdir(p, 0o700); err != nil {
			return nil, err
		}
	}

	d.initial = fakes3.NewKeys("AKDEMO")
	if d.s3, err = fakes3.Start(d.initial, bucket); err != nil {
		return nil, err
	}
	fmt.Printf("demo: S3 server with SigV4 checking on %s, bucket %q\n", d.s3.URL, bucket)

	keysR, keysW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	eventsR, eventsW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(d.dir, "rekey-fuse.log"))
	if err != nil {
		return nil, err
	}
	// The keys go through fd 3; argv carries only where things are.
	d.child = exec.CommandContext(ctx, cfg.FuseBinary,
		"--endpoint", d.s3.URL, "--bucket", bucket, "--o", "use_path_request_style",
		"--mountpoint", d.mnt, "--staging-dir", staging, "--control-socket", sock,
		"--keys-fd", "3", "--ready-fd", "4", "--events-fd", "5", "--volume-id", "demo-volume")
	d.child.ExtraFiles = []*os.File{keysR, readyW, eventsW}
	d.child.Stdout, d.child.Stderr = logFile, logFile
	d.child.Env = []string{"PATH=/usr/bin:/bin"}
	d.child.Cancel = func() error { return d.child.Process.Signal(syscall.SIGTERM) }
	d.child.WaitDelay = 30 * time.Second
	if err := d.child.Start(); err != nil {
		return nil, fmt.Errorf("start rekey-fuse: %w", err)
	}
	keysR.Close()
	readyW.Close()
	eventsW.Close()
	go func() { d.exited <- d.child.Wait(); logFile.Close() }()
	go d.readEvents(eventsR)

	if err := keys.Encode(keysW, d.initial); err != nil {
		return nil, err
	}
	keysW.Close()

	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := readyR.Read(b)
		readyR.Close()
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, fmt.Errorf("rekey-fuse did not become ready (log: %s)", logFile.Name())
		}
	case err := <-d.exited:
		d.exited <- err
		return nil, fmt.Errorf("rekey-fuse exited: %w (log: %s)", err, logFile.Name())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("rekey-fuse not ready after 30s (log: %s)", logFile.Name())
	}
	fmt.Printf("demo: mounted s3://%s at %s (pid %d)\n", bucket, d.mnt, d.child.Process.Pid)

	// The Secret as kubelet projects it: a directory updated with
	// AtomicWriter's timestamped-directory and ..data symlink swap.
	secretDir := filepath.Join(d.dir, "secret")
	if err := os.Mkdir(secretDir, 0o700); err != nil {
		return nil, err
	}
	if d.secrets, err = atomicwriter.New(secretDir); err != nil {
		return nil, err
	}
	if err := d.writeSecret(d.initial); err != nil {
		return nil, err
	}
	if err := d.startSidecar(ctx, cfg, sockDir); err != nil {
		return nil, err
	}
	fmt.Printf("demo: sidecar (pid %d) watches %s and pushes keys to %s\n", d.sidecar.Process.Pid, d.secrets.Dir(), sock)
	return d, nil
}

func (d *demo) writeSecret(k keys.Keys) error {
	return d.secrets.WriteStrings(map[string]string{contract.SecretKeyAkID: k.AccessKeyID, contract.SecretKeyAkSecret: k.SecretAccessKey})
}

func (d *demo) startSidecar(ctx context.Context, cfg Config, sockDir string) error {
	sources, err := json.Marshal([]contract.Source{{VolumeID: "demo-volume", AuthType: contract.AuthTypeSecret, SecretDir: d.secrets.Dir()}})
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(d.dir, "rekey-sidecar.log"))
	if err != nil {
		return err
	}
	d.sidecar = exec.CommandContext(ctx, cfg.SidecarBinary,
		"--"+contract.SidecarSourcesFlag, string(sources), "--"+contract.SidecarSocketDirFlag, sockDir)
	d.sidecar.Stdout, d.sidecar.Stderr = logFile, logFile
	d.sidecar.Env = []string{"PATH=/usr/bin:/bin"}
	d.sidecar.Cancel = func() error { return d.sidecar.Process.Signal(syscall.SIGTERM) }
	d.sidecar.WaitDelay = 10 * time.Second
	if err := d.sidecar.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start rekey-sidecar: %w", err)
	}
	go func() { d.sideErr <- d.sidecar.Wait(); logFile.Close() }()
	return nil
}

// waitApplied returns a channel closed once rekey-fuse reports a swap to k.
func (d *demo) waitApplied(k keys.Keys) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	fp := k.Fingerprint()
	ch, ok := d.applied[fp]
	if !ok {
		ch = make(chan struct{})
		d.applied[fp] = ch
	}
	return ch
}

func (d *demo) readEvents(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var ev fuseserver.EventRecord
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		d.mu.Lock()
		d.events = append(d.events, ev)
		if ev.Kind == "applied" {
			ch, ok := d.applied[ev.Fingerprint]
			if !ok {
				ch = make(chan struct{})
				d.applied[ev.Fingerprint] = ch
			}
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
		d.mu.Unlock()
	}
}

// swap is the loadcheck.SwapFunc: it updates the projected Secret the way
// kubelet does and waits until the sidecar got the keys applied.
func (d *demo) swap(ctx context.Context, k keys.Keys, _ uint64) error {
	applied := d.waitApplied(k)
	if err := d.writeSecret(k); err != nil {
		return err
	}
	select {
	case <-applied:
		return nil
	case err := <-d.sideErr:
		d.sideErr <- err
		return fmt.Errorf("rekey-sidecar exited: %w", err)
	case <-time.After(20 * time.Second):
		return fmt.Errorf("keys %s not applied 20s after the Secret changed", k.Fingerprint())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *demo) exercise(ctx context.Context, cfg Config) (Summary, error) {
	var st loadcheck.Stats
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		loadcheck.Load{Dir: d.mnt, Workers: cfg.Workers}.Run(loadCtx, &st)
		close(loadDone)
	}()

	rot := &loadcheck.Rotator{Server: d.s3, Swap: d.swap, Current: d.initial}
	var lat []time.Duration
	var swapErrs []string
	began := time.Now()
	for i := 0; i < cfg.Rotations && ctx.Err() == nil; i++ {
		time.Sleep(cfg.Interval)
		took, err := rot.Rotate(ctx)
		if err != nil {
			swapErrs = append(swapErrs, err.Error())
			continue
		}
		lat = append(lat, took)
		fmt.Printf("demo: rotation %2d: Secret updated, sidecar swapped to %s in %s, old key revoked\n", i+1, rot.Current.Fingerprint(), took.Round(10*time.Microsecond))
	}
	time.Sleep(cfg.Interval) // keep the load running on the last key too
	stopLoad()
	<-loadDone

	// Everything written must be in the bucket, read with the newest key.
	unclean := d.stopChild()
	sum := Summary{
		Rotations: len(lat), SwapFailures: len(swapErrs), Ops: st.Ops.Load(), Failed: st.Failed.Load(),
		Mismatched: st.Mismatched.Load(), Bytes: st.Bytes.Load(), Duration: time.Since(began),
		P50: loadcheck.Percentile(lat, 50), P99: loadcheck.Percentile(lat, 99),
		Errors: append(swapErrs, st.Errors()...),
	}
	if unclean != nil {
		sum.Failed++
		sum.Errors = append(sum.Errors, "rekey-fuse shutdown: "+unclean.Error())
	}
	d.mu.Lock()
	for _, ev := range d.events {
		if ev.Kind == "applied" {
			sum.EventsApplied++
		}
	}
	d.mu.Unlock()
	return sum, nil
}

// stopChild sends SIGTERM and waits: rekey-fuse uploads what is staged and unmounts.
func (d *demo) stopChild() error {
	if d.child == nil || d.child.Process == nil {
		return nil
	}
	_ = d.child.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.child = nil
		return err
	case <-time.After(40 * time.Second):
		_ = d.child.Process.Kill()
		d.child = nil
		return errors.New("did not exit within 40s")
	}
}

func (d *demo) close(keep bool) {
	if d.sidecar != nil && d.sidecar.Process != nil {
		_ = d.sidecar.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.sideErr:
			if err != nil {
				d.log.V(1).Info("rekey-sidecar exited", "err", err.Error())
			}
		case <-time.After(10 * time.Second):
			_ = d.sidecar.Process.Kill()
		}
	}
	if d.child != nil {
		_ = d.stopChild()
	}
	if d.mnt != "" {
		// A crashed server leaves a dead mount; detach it so cleanup works.
		_ = syscall.Unmount(d.mnt, syscall.MNT_DETACH)
	}
	if d.s3 != nil {
		_ = d.s3.Close()
	}
	if d.dir != "" && !keep {
		_ = os.RemoveAll(d.dir)
	} else if d.dir != "" {
		fmt.Println("demo: kept " + d.dir)
	}
}
