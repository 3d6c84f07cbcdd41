package supervisor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/journal"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

// TestStopKeepsDirtyStaging: a server that cannot upload (its keys were
// revoked) is stopped; Stop keeps the data it staged, with its journal,
// and reports the object; the next server for the same target uploads it
// and the staging directory goes.
func TestStopKeepsDirtyStaging(t *testing.T) {
	sm := startStagingMount(t, "AKSTAGE")
	sup, m, target, cfg, s3srv, admin, k, spec, info := sm.sup, sm.m, sm.target, sm.cfg, sm.s3, sm.admin, sm.k, sm.spec, sm.info
	ctx := context.Background()
	events, cancel := sup.Subscribe()
	defer cancel()

	data := make([]byte, 300<<10)
	_, _ = rand.Read(data)
	f, err := os.Create(filepath.Join(target, "precious.bin"))
	if err != nil {
		t.Fatal(err)
	}
	s3srv.RevokeKeys(k)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err == nil {
		t.Fatal("close uploaded with revoked keys")
	}
	if err := sup.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}

	staging := filepath.Join(cfg.StateDir, info.ID+".staging")
	entries, _, err := journal.Scan(staging)
	if err != nil {
		t.Fatalf("staging directory removed: %v", err)
	}
	var dirty []journal.Entry
	for _, e := range entries {
		if !e.Removable() {
			dirty = append(dirty, e)
		}
	}
	if len(dirty) != 1 || dirty[0].Record.Key != "precious.bin" || dirty[0].Record.State != journal.StateDirty {
		t.Fatalf("staging after Stop: %+v", entries)
	}
	if b, err := os.ReadFile(dirty[0].DataPath); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("staged data after Stop differs: %v", err)
	}
	select {
	case ev := <-events:
		if ev.Kind != supervisor.EventStagedDataRetained || !slices.Equal(ev.Keys, []string{"precious.bin"}) ||
			ev.Spec.VolumeID != "pv" || !strings.Contains(ev.Reason, staging) {
			t.Fatalf("event %+v, want retained precious.bin", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no retained event")
	}
	if _, err := s3srv.Client(admin).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("precious.bin")}); err == nil {
		t.Fatal("the object exists: the test uploaded nothing through revoked keys")
	}

	// The next server of the target (kubelet republishes) uploads it.
	s3srv.AddKeys(k)
	info = startOn(t, m, spec, k, sup.Start)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := s3srv.Client(admin).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("precious.bin")})
		if err == nil {
			b, rerr := io.ReadAll(out.Body)
			_ = out.Body.Close()
			if rerr == nil && bytes.Equal(b, data) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovered data not in the bucket: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := sup.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staging); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging directory after an uploaded stop: %v", err)
	}
}

// TestStopLeavesNoWriteCache: files written through a mount stay in its
// staging directory as the write cache after their upload; the server
// under a supervisor does not remove them itself (it serves a descriptor
// the supervisor holds, and until it exits a read may still use them), so
// the supervisor's prune after Stop must: nothing of the mount is left.
func TestStopLeavesNoWriteCache(t *testing.T) {
	sm := startStagingMount(t, "AKCACHE")
	sup, m, target, cfg, s3srv, admin, info := sm.sup, sm.m, sm.target, sm.cfg, sm.s3, sm.admin, sm.info
	ctx := context.Background()
	for i := range 10 {
		if err := os.WriteFile(filepath.Join(target, "f"+strconv.Itoa(i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	staging := filepath.Join(cfg.StateDir, info.ID+".staging")
	entries, _, err := journal.Scan(staging)
	if err != nil || len(entries) == 0 {
		t.Fatalf("no write cache in %s while serving (%v): the test would prove nothing", staging, err)
	}
	if err := sup.Stop(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if entries, _, err := journal.Scan(staging); err == nil && len(entries) > 0 {
		t.Fatalf("%d staging entries left after Stop: %+v", len(entries), entries)
	}
	for i := range 10 {
		if got := object(t, s3srv, admin, "f"+strconv.Itoa(i)); got != "data" {
			t.Fatalf("f%d in the bucket: %q", i, got)
		}
	}
}

// stagingMount is a supervisor with one mount, served with keys k of its
// own (a test may revoke them); admin reads the bucket behind its back.
type stagingMount struct {
	sup      *supervisor.Supervisor
	m        mounter.Interface
	target   string
	cfg      supervisor.Config
	s3       *fakes3.Server
	admin, k keys.Keys
	spec     supervisor.Spec
	info     supervisor.Info
}

func startStagingMount(t *testing.T, keyID string) stagingMount {
	t.Helper()
	needRoot(t)
	dir, bin, admin, s3srv := setup(t)
	m, target, cfg := newTarget(t, dir, bin)
	sup, err := supervisor.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := fakes3.NewKeys(keyID)
	s3srv.AddKeys(k)
	spec := supervisor.Spec{Target: target, VolumeID: "pv", Endpoint: s3srv.URL, Bucket: "bkt", Options: "use_path_request_style"}
	return stagingMount{sup: sup, m: m, target: target, cfg: cfg, s3: s3srv, admin: admin, k: k, spec: spec, info: startOn(t, m, spec, k, sup.Start)}
}
