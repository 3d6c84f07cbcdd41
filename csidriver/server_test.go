package csidriver

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/csidriver/mounter"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/logging"
)

// fakeMounter records mounts in memory and hands out /dev/null as the
// "FUSE" descriptor.
type fakeMounter struct {
	mu      sync.Mutex
	mounted map[string]bool
}

func (f *fakeMounter) IsMountPoint(target string) (bool, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounted[target], false, nil
}

func (f *fakeMounter) MountFUSE(target string, _ mounter.FUSEOptions) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounted[target] = true
	return os.Open(os.DevNull)
}

func (f *fakeMounter) Unmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounted, target)
	return nil
}
func (f *fakeMounter) Abort(string) error                  { return nil }
func (f *fakeMounter) ConnectionID(string) (uint32, error) { return 7, nil }
func (f *fakeMounter) AbortConnection(uint32) error        { return nil }

// fakeRunner keeps mounts in memory; it receives the keys and drops them.
type fakeRunner struct {
	mu     sync.Mutex
	mounts map[string]supervisor.Info
}

func (r *fakeRunner) Start(_ context.Context, spec supervisor.Spec, _ supervisor.Descriptors, _ keys.Keys) (supervisor.Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := supervisor.Info{Spec: spec, ID: supervisor.MountID(spec.Target), ControlSocket: "/nonexistent.sock"}
	r.mounts[in.ID] = in
	return in, nil
}

func (r *fakeRunner) Stop(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.mounts, id)
	return nil
}

func (r *fakeRunner) List(context.Context) ([]supervisor.Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []supervisor.Info
	for _, in := range r.mounts {
		out = append(out, in)
	}
	return out, nil
}

func (r *fakeRunner) Attach(context.Context, string, supervisor.Descriptors) error { return nil }

func (r *fakeRunner) Descriptors(context.Context, string) (supervisor.Descriptors, error) {
	return supervisor.Descriptors{}, supervisor.ErrNotFound
}

// testDriver serves a Driver with fakes over a real gRPC connection.
func testDriver(t *testing.T, opts Options) csi.NodeClient {
	t.Helper()
	if opts.Mounter == nil {
		opts.Mounter = &fakeMounter{mounted: map[string]bool{}}
	}
	if opts.Runner == nil {
		opts.Runner = &fakeRunner{mounts: map[string]supervisor.Info{}}
	}
	if opts.Precheck == nil {
		opts.Precheck = func(context.Context, volumecontext.Volume) error { return nil }
	}
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(); cancel(); <-done })
	return csi.NewNodeClient(conn)
}

// TestNoSecretInLogs fails if a secret key, session token or secret
// value reaches the log, through any path: success, validation failure,
// precheck failure, republish.
func TestNoSecretInLogs(t *testing.T) {
	t.Parallel()
	const (
		ak     = "AKIDLEAKTEST"
		sk     = "SKsuperSECRETvalue0123456789abcdef"
		token  = "TOKENsuperSECRETsession0123456789"
		custom = "customSECRETvalue42"
	)
	var buf bytes.Buffer
	var mu sync.Mutex
	log, err := logging.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }), "json", 10)
	if err != nil {
		t.Fatal(err)
	}
	failPrecheck := false
	c := testDriver(t, Options{NodeID: "n", Log: log, Precheck: func(context.Context, volumecontext.Volume) error {
		if failPrecheck {
			return &PrecheckError{Kind: PrecheckDenied, Message: "secret key mismatch (SignatureDoesNotMatch)"}
		}
		return nil
	}})
	target := filepath.Join(t.TempDir(), "mnt")
	req := &csi.NodePublishVolumeRequest{VolumeId: "pv", TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}},
		VolumeContext: map[string]string{"bucket": "bkt", "url": "http://127.0.0.1:1"},
		Secrets:       map[string]string{"AccessKeyId": ak, "AccessKeySecret": sk, "SecurityToken": token, "extra": custom}}
	ctx := context.Background()
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if _, err := c.NodePublishVolume(ctx, req); err != nil { // republish: swap fails, no error
		t.Fatalf("republish: %v", err)
	}
	req.TargetPath += "2"
	failPrecheck = true
	if _, err := c.NodePublishVolume(ctx, req); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("publish with failing precheck = %v, want FailedPrecondition", err)
	}
	req.VolumeContext["bucket"] = "" // validation failure
	if _, err := c.NodePublishVolume(ctx, req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("publish without bucket = %v, want InvalidArgument", err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "NodePublishVolume") || !strings.Contains(out, strippedValue) {
		t.Fatalf("log does not show the stripped calls:\n%s", out)
	}
	for _, secret := range []string{sk, token, custom} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret value %q:\n%s", secret, out)
		}
	}
}

// TestNoTokenInLogs fails if a service-account token kubelet passes in
// the volume context reaches the log or an RPC error: publish with a token
// STS accepts, publish with one STS refuses (and echoes), a republish, and
// a malformed tokens attribute.
func TestNoTokenInLogs(t *testing.T) {
	t.Parallel()
	const (
		good = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnb29kIn0.R09PRHRva2VuU0VDUkVUc2lnbmF0dXJl"
		bad  = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiYWQifQ.QkFEdG9rZW5TRUNSRVRzaWduYXR1cmU"
		sk   = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSTSKEY"
	)
	stsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if tok := r.PostForm.Get("WebIdentityToken"); tok != good {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>token `+tok+
				` is not valid</Message></Error><RequestId>r-1</RequestId></ErrorResponse>`)
			return
		}
		_, _ = io.WriteString(w, `<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>
<SessionToken>FwoGZXIvYXdzEJrSESSION</SessionToken><SecretAccessKey>`+sk+`</SecretAccessKey>
<Expiration>2030-10-24T23:00:23Z</Expiration><AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`)
	}))
	t.Cleanup(stsSrv.Close)
	var buf bytes.Buffer
	var mu sync.Mutex
	log, err := logging.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }), "json", 10)
	if err != nil {
		t.Fatal(err)
	}
	c := testDriver(t, Options{NodeID: "n", Log: log, Policy: &Policy{InsecureSTS: true}}) // the test STS speaks http
	tokens := func(tok string) string {
		return `{"sts.amazonaws.com":{"token":"` + tok + `","expirationTimestamp":"2030-01-01T00:00:00Z"}}`
	}
	req := &csi.NodePublishVolumeRequest{VolumeId: "pv", TargetPath: filepath.Join(t.TempDir(), "mnt"),
		VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}},
		VolumeContext: map[string]string{"bucket": "bkt", "url": "http://127.0.0.1:1", "authType": "irsa",
			"roleArn": "arn:aws:iam::1:role/r", "stsEndpoint": stsSrv.URL, contract.PodInfoServiceAccountTokens: tokens(good)}}
	ctx := context.Background()
	var errs []string
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("publish: %v", err)
	}
	req.VolumeContext[contract.PodInfoServiceAccountTokens] = tokens(bad)
	if _, err := c.NodePublishVolume(ctx, req); err != nil { // republish: never an error
		t.Fatalf("republish: %v", err)
	}
	req.TargetPath += "2"
	_, err = c.NodePublishVolume(ctx, req)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "InvalidIdentityToken") {
		t.Fatalf("publish with a refused token = %v, want FailedPrecondition naming STS's code", err)
	}
	errs = append(errs, err.Error())
	req.VolumeContext[contract.PodInfoServiceAccountTokens] = `{"sts.amazonaws.com":{"token":"` + bad + `"`
	_, err = c.NodePublishVolume(ctx, req)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("publish with malformed tokens = %v, want InvalidArgument", err)
	}
	errs = append(errs, err.Error())
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "NodePublishVolume") || !strings.Contains(out, contract.PodInfoServiceAccountTokens) {
		t.Fatalf("log does not show the calls:\n%s", out)
	}
	for _, secret := range []string{good, bad, good[len(good)-24:], bad[len(bad)-24:], sk} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a token or key %q:\n%s", secret, out)
		}
		for _, e := range errs {
			if strings.Contains(e, secret) {
				t.Errorf("error contains a token or key %q: %s", secret, e)
			}
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestStripSecrets(t *testing.T) {
	t.Parallel()
	req := &csi.NodePublishVolumeRequest{VolumeId: "v", Secrets: map[string]string{"akSecret": "s3cr3t"}}
	got := StripSecrets(req).(*csi.NodePublishVolumeRequest)
	if got.Secrets["akSecret"] != strippedValue || got.VolumeId != "v" {
		t.Errorf("StripSecrets = %v", got)
	}
	if req.Secrets["akSecret"] != "s3cr3t" {
		t.Error("StripSecrets changed the original request")
	}
	tokReq := &csi.NodePublishVolumeRequest{VolumeContext: map[string]string{"bucket": "b",
		contract.PodInfoServiceAccountTokens: `{"sts.amazonaws.com":{"token":"a.b.c"}}`}}
	gotTok := StripSecrets(tokReq).(*csi.NodePublishVolumeRequest)
	if gotTok.VolumeContext[contract.PodInfoServiceAccountTokens] != strippedValue || gotTok.VolumeContext["bucket"] != "b" {
		t.Errorf("StripSecrets = %v", gotTok)
	}
	if tokReq.VolumeContext[contract.PodInfoServiceAccountTokens] == strippedValue {
		t.Error("StripSecrets changed the original request")
	}
}
