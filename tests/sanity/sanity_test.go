package sanity

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"rekey.dev/rekey/csidriver"
	"rekey.dev/rekey/internal/fusetest"
)

// sanitySkips are the csi-sanity specs that do not apply, and why:
//   - "[GroupController": rekey has no group controller (no group
//     snapshots).
//
// Every other Controller spec runs against the real Controller service
// (csidriver.NewControllerServer) provisioning prefixes in a bucket of a
// real S3 server. The specs csi-sanity skips by itself, from the
// capabilities the plugin reports, are listed in docs/provisioning.md
// ("csi-sanity").
var sanitySkips = []string{`\[GroupController`}

// fakeIdentity is the identity of the node endpoint the sanity specs use:
// it forwards GetPluginInfo and Probe to the driver's real Identity service
// and adds CONTROLLER_SERVICE to the capabilities (in a cluster the
// Controller service runs in rekey-controller, a separate Deployment),
// which makes csi-sanity run its full Node lifecycle specs ("should work",
// "should be idempotent") against real mounts of provisioned volumes.
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

// sanityServerEnv selects the S3 server of TestSanity: the in-process
// fakes3 by default, MinIO when TestSanityMinIO runs it in a child process.
const sanityServerEnv = "REKEY_SANITY_S3"

// TestSanity runs csi-sanity's Identity, Node and Controller specs: the
// Controller service provisions a prefix per volume in a bucket of a real
// S3 server, the Node service mounts it with real FUSE mounts.
func TestSanity(t *testing.T) {
	needRoot(t)
	var srv *fusetest.Server
	if os.Getenv(sanityServerEnv) == "minio" {
		srv = fusetest.StartMinIO(t)
	} else {
		srv = fusetest.StartFake(t)
	}
	params := map[string]string{"bucket": fusetest.Bucket, "url": srv.URL, "otherOpts": "-o use_path_request_style",
		"pathPattern": "sanity/${pv.name}"}
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
	ctrl := csidriver.ControllerGRPCServer(csidriver.NewControllerServer(csidriver.ControllerOptions{Log: log.WithName("controller")}),
		"test", log.WithName("controller-grpc"))
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
	var secrets strings.Builder
	for _, name := range []string{"CreateVolumeSecret", "DeleteVolumeSecret", "NodePublishVolumeSecret",
		"ControllerValidateVolumeCapabilitiesSecret", "ControllerExpandVolumeSecret"} {
		fmt.Fprintf(&secrets, "%s:\n  akId: %q\n  akSecret: %q\n", name, srv.Admin.AccessKeyID, srv.Admin.SecretAccessKey)
	}
	if err := os.WriteFile(secretsFile, []byte(secrets.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SecretsFile = secretsFile
	cfg.IdempotentCount = 2
	cfg.TestVolumeAccessType = "mount"
	cfg.TestVolumeParameters = params

	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.SkipStrings = append(suite.SkipStrings, sanitySkips...)
	ginkgo.RunSpecs(t, "rekey csi-sanity ("+srv.Name+")", suite, reporter)
	sc.Finalize()
	// Every provisioned volume was deleted again: nothing is left under the
	// prefixes csi-sanity's volumes had.
	if left := srv.Keys(t, "sanity/"); len(left) > 0 {
		t.Errorf("%d objects left under sanity/ after the specs deleted their volumes, e.g. %s", len(left), left[0])
	}
}

// TestSanityMinIO runs TestSanity against MinIO (REKEY_MINIO_BIN) in a
// child process: Ginkgo runs its specs once per process.
func TestSanityMinIO(t *testing.T) {
	needRoot(t)
	if os.Getenv(sanityServerEnv) != "" {
		t.Skip("the child process runs TestSanity only")
	}
	fusetest.Binary(t, "REKEY_MINIO_BIN", "tests/s3servers/build-minio.sh")
	//nolint:gosec // re-runs this test binary
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSanity$", "-test.count=1", "-test.v", "-ginkgo.no-color")
	cmd.Env = append(os.Environ(), sanityServerEnv+"=minio")
	out, err := cmd.CombinedOutput()
	summary := ginkgoSummary.FindString(string(out))
	t.Logf("MinIO: %s", summary)
	if err != nil || summary == "" {
		t.Fatalf("csi-sanity against MinIO: %v\n%s", err, tail(out, 30000))
	}
}

// ginkgoSummary is Ginkgo's closing line: "N Passed | N Failed | N Pending | N Skipped".
var ginkgoSummary = regexp.MustCompile(`Ran \d+ of \d+ Specs[^\n]*\n[^\n]*Passed \| \d+ Failed \| \d+ Pending \| \d+ Skipped`)

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
