package sanity

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"rekey.dev/rekey/csidriver"
)

// sanitySkips are the csi-sanity specs that do not apply to a node-only
// plugin for static volumes, and why:
//   - "[Controller Server]" and "[GroupController": rekey has no controller
//     service (static PVs, attachRequired: false). The test-only controller
//     below exists only so that the Node specs can "create" a volume; its
//     own behaviour is not what is under test.
var sanitySkips = []string{`\[Controller Server\]`, `\[GroupController`}

// fakeController hands out volume contexts that point at the test's S3
// server, standing in for the admin who writes a static PV.
type fakeController struct {
	csi.UnimplementedControllerServer
	ctx map[string]string
}

func (c *fakeController) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{
			Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}}}}}, nil
}

func (c *fakeController) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: req.GetName(), VolumeContext: c.ctx}}, nil
}

func (c *fakeController) DeleteVolume(context.Context, *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return &csi.DeleteVolumeResponse{}, nil
}

// fakeIdentity is the identity of the test-only controller endpoint and of
// the node endpoint the sanity specs use: it forwards GetPluginInfo and
// Probe to the driver's real Identity service and adds CONTROLLER_SERVICE to
// the capabilities, which makes csi-sanity run its full Node lifecycle
// specs ("should work", "should be idempotent") against real mounts.
type fakeIdentity struct {
	csi.UnimplementedIdentityServer
	real csi.IdentityClient
}

func (f fakeIdentity) GetPluginInfo(ctx context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return f.real.GetPluginInfo(ctx, req)
}

func (fakeIdentity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}}}}, nil
}

func (f fakeIdentity) Probe(ctx context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return f.real.Probe(ctx, req)
}

func TestSanity(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	log := testLogger(t)
	endpoint, d := inProcessDriver(t, log)
	conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ident := fakeIdentity{real: csi.NewIdentityClient(conn)}

	dir := shortTempDir(t)
	nodeSock := filepath.Join(dir, "node.sock")
	node := grpc.NewServer(grpc.UnaryInterceptor(csidriver.LoggingInterceptor(log)))
	csi.RegisterNodeServer(node, d.NodeServer())
	csi.RegisterIdentityServer(node, ident)
	nlis, err := listenUnix(nodeSock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = node.Serve(nlis) }()
	defer node.Stop()
	ctrlSock := filepath.Join(dir, "ctrl.sock")
	ctrl := grpc.NewServer()
	csi.RegisterControllerServer(ctrl, &fakeController{ctx: e.volumeContext()})
	csi.RegisterIdentityServer(ctrl, ident)
	lis, err := listenUnix(ctrlSock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ctrl.Serve(lis) }()
	defer ctrl.Stop()

	cfg := sanity.NewTestConfig()
	cfg.Address = nodeSock
	cfg.ControllerAddress = ctrlSock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	secretsFile := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secretsFile, []byte(fmt.Sprintf("NodePublishVolumeSecret:\n  akId: %q\n  akSecret: %q\n",
		e.keys.AccessKeyID, e.keys.SecretAccessKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SecretsFile = secretsFile
	cfg.IdempotentCount = 2
	cfg.TestVolumeAccessType = "mount"

	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.SkipStrings = append(suite.SkipStrings, sanitySkips...)
	ginkgo.RunSpecs(t, "rekey csi-sanity", suite, reporter)
	sc.Finalize()
}
