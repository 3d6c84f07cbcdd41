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
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/loadcheck"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
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
	client  credentialsv1.CredentialServiceClient
	closer  io.Closer
	initial keys.Keys

	mu     sync.Mutex
	events []fuseserver.EventRecord
}

func start(ctx context.Context, cfg Config, log logr.Logger) (_ *demo, err error) {
	d := &demo{log: log, exited: make(chan error, 1)}
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
	sock := filepath.Join(d.dir, "ctl.sock")
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		return nil, err
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
		return nil, fmt.Errorf("rekey-fuse exited: %v (log: %s)", err, logFile.Name())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("rekey-fuse not ready after 30s (log: %s)", logFile.Name())
	}
	fmt.Printf("demo: mounted s3://%s at %s (pid %d)\n", bucket, d.mnt, d.child.Process.Pid)

	if d.client, d.closer, err = control.Dial(sock); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *demo) readEvents(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var ev fuseserver.EventRecord
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			d.mu.Lock()
			d.events = append(d.events, ev)
			d.mu.Unlock()
		}
	}
}

// swap is the loadcheck.SwapFunc: what a sidecar does over the socket.
func (d *demo) swap(ctx context.Context, k keys.Keys, gen uint64) error {
	resp, err := d.client.Swap(ctx, &credentialsv1.SwapRequest{
		AccessKeyId: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
		Source: "demo", Generation: gen,
	})
	if err != nil {
		return err
	}
	if resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		return fmt.Errorf("swap %s: %s", resp.GetResult(), resp.GetMessage())
	}
	return nil
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
		fmt.Printf("demo: rotation %2d: now on %s, old key revoked, swap took %s\n", i+1, rot.Current.Fingerprint(), took.Round(10*time.Microsecond))
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
	if d.closer != nil {
		_ = d.closer.Close()
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
