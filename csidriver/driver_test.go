package csidriver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerv1 "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/contract"
)

func TestRegistration(t *testing.T) {
	t.Parallel()
	root, err := os.MkdirTemp("", "rkreg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	d, err := New(Options{KubeletRootDir: root, Mounter: &fakeMounter{}, Runner: &fakeRunner{mounts: map[string]supervisor.Info{}}, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.ServeRegistration(ctx, "/csi.sock") }()
	sock := filepath.Join(root, "plugins_registry", contract.DriverName+"-reg.sock")
	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := registerv1.NewRegistrationClient(conn)
	var info *registerv1.PluginInfo
	for deadline := time.Now().Add(5 * time.Second); ; {
		if info, err = c.GetInfo(ctx, &registerv1.InfoRequest{}); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.GetType() != registerv1.CSIPlugin || info.GetName() != contract.DriverName || info.GetEndpoint() != "/csi.sock" {
		t.Errorf("GetInfo = %v", info)
	}
	if _, err := c.NotifyRegistrationStatus(ctx, &registerv1.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	runner := &fakeRunner{mounts: map[string]supervisor.Info{"a": {ID: "a", Version: "v1"}, "b": {ID: "b", Version: "v2"},
		"c": {ID: "c", Version: "v2"}, "d": {ID: "d", Version: "v1", Dead: true}}}
	d, err := New(Options{Mounter: &fakeMounter{}, Runner: runner, Registerer: reg, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.HTTPHandler(reg))
	defer srv.Close()
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": "rekey_csi_mounts 4",
		"/metrics ": `rekey_csi_fuse_servers{version="v1"} 1`, "/metrics  ": `rekey_csi_fuse_servers{version="v2"} 2`} {
		resp, err := http.Get(srv.URL + strings.TrimSpace(path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("%s = %d %q, want %q", path, resp.StatusCode, b, want)
		}
	}
}
