package sanity

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/container-storage-interface/spec/lib/go/csi"

	"rekey.dev/rekey/csidriver"
	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/sts/ststest"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// saTokens is the volume-context entry kubelet writes for tokenRequests.
func saTokens(audience, token string, exp time.Time) string {
	return fmt.Sprintf(`{%q:{"token":%q,"expirationTimestamp":%q}}`, audience, token, exp.UTC().Format(time.RFC3339))
}

// serverStatus asks the FUSE server of target for its Status.
func serverStatus(t *testing.T, runner csidriver.Runner, target string) *credentialsv1.StatusResponse {
	t.Helper()
	infos, err := runner.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ID != supervisor.MountID(target) {
			continue
		}
		c, closer, err := control.Dial(in.ControlSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = closer.Close() }()
		st, err := c.Status(context.Background(), &credentialsv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	t.Fatalf("no FUSE server for %s", target)
	return nil
}

func writeAndCheck(t *testing.T, target, name, body string, get func(key string) ([]byte, error)) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(target, name), []byte(body), 0o644); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	got, err := get(name)
	if err != nil || string(got) != body {
		t.Fatalf("object %s = %q, %v; want %q", name, got, err, body)
	}
}

// TestPublishIRSAMinIO publishes an irsa volume whose only credential is
// the service-account token kubelet passes (CSIDriver tokenRequests): the
// driver exchanges it at a real MinIO STS (AssumeRoleWithWebIdentity) for
// temporary keys and mounts with them. A republish with the same token and
// fresh keys changes nothing; one with a new token rotates the keys, and
// I/O goes on with them.
func TestPublishIRSAMinIO(t *testing.T) {
	needRoot(t)
	bin := ststest.MinIOBinary(t)
	iss := ststest.StartIssuer(t)
	m := ststest.StartMinIO(t, bin, iss)
	m.WaitSTS(t, iss)
	ctx := context.Background()
	if _, err := m.S3(m.Root()).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("data")}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	get := func(key string) ([]byte, error) {
		out, err := m.S3(m.Root()).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("data"), Key: aws.String(key)})
		if err != nil {
			return nil, err
		}
		defer func() { _ = out.Body.Close() }()
		return io.ReadAll(out.Body)
	}

	var runner csidriver.Runner
	endpoint, _ := inProcessDriver(t, testLogger(t), func(o *csidriver.Options) {
		o.STSDuration = 15 * time.Minute
		runner = o.Runner
	})
	c := nodeClient(t, endpoint)
	target := filepath.Join(shortTempDir(t), "mnt")
	exp := time.Now().Add(time.Hour)
	req := &csi.NodePublishVolumeRequest{VolumeId: "pv-irsa", TargetPath: target, VolumeCapability: mountCapability(),
		VolumeContext: map[string]string{"bucket": "data", "url": m.URL, "otherOpts": "-o use_path_request_style",
			"authType": "irsa", "roleArn": "arn:minio:iam:::role/rekey", "stsEndpoint": m.URL, "audience": ststest.ClientID,
			contract.PodInfoServiceAccountTokens: saTokens(ststest.ClientID, iss.Token(t, time.Hour, nil), exp)}}
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() {
		_, _ = c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-irsa", TargetPath: target})
	})
	st1 := serverStatus(t, runner, target)
	if st1.GetAuthType() != "irsa" || st1.GetExpiration() == nil || st1.GetFingerprint() == "" ||
		time.Until(st1.GetExpiration().AsTime()) > 16*time.Minute {
		t.Fatalf("status after publish: %v", st1)
	}
	writeAndCheck(t, target, "one.txt", "written with STS keys", get)

	// Same token, keys far from expiry: nothing to do.
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if st := serverStatus(t, runner, target); st.GetFingerprint() != st1.GetFingerprint() || st.GetGeneration() != st1.GetGeneration() {
		t.Errorf("republish with the same token changed the keys: %v", st)
	}

	// kubelet rotated the token: the driver exchanges it again and swaps.
	req.VolumeContext[contract.PodInfoServiceAccountTokens] = saTokens(ststest.ClientID, iss.Token(t, time.Hour, nil), exp)
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("republish with a new token: %v", err)
	}
	st2 := serverStatus(t, runner, target)
	if st2.GetFingerprint() == st1.GetFingerprint() || st2.GetLastSwap().GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED ||
		st2.GetLastSwap().GetSource() != "csi-irsa" {
		t.Fatalf("republish with a new token did not rotate the keys: %v", st2)
	}
	writeAndCheck(t, target, "two.txt", "written with rotated STS keys", get)

	// A token MinIO refuses on a republish: the call succeeds, the keys stay.
	req.VolumeContext[contract.PodInfoServiceAccountTokens] = saTokens(ststest.ClientID, "e30.e30.c2ln", exp)
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("republish with a refused token: %v", err)
	}
	if st := serverStatus(t, runner, target); st.GetFingerprint() != st2.GetFingerprint() {
		t.Errorf("a refused token changed the keys: %v", st)
	}
	writeAndCheck(t, target, "three.txt", "still writing", get)
}

// TestPublishRRSA publishes an rrsa volume against a fake Alibaba STS
// (AssumeRoleWithOIDC, checked the way Alibaba documents it) that issues
// keys of the in-process S3 server, each valid 5 minutes. Keys that expire
// within the refresh window make a republish exchange the same token again;
// the old keys are revoked right after, and I/O goes on.
func TestPublishRRSA(t *testing.T) {
	needRoot(t)
	e := newEnv(t)
	var mu sync.Mutex
	var issued []keys.Keys
	stsSrv := ststest.Alibaba(t, func(w http.ResponseWriter, form url.Values) {
		if form.Get("RoleArn") != "acs:ram::1:role/r" || form.Get("OIDCProviderArn") != "acs:ram::1:oidc-provider/p" {
			t.Errorf("STS form %v", form)
		}
		k := fakes3.NewKeys("STS.")
		k.SessionToken = "CAIS" + k.AccessKeyID
		e.s3.AddKeys(k)
		mu.Lock()
		issued = append(issued, k)
		mu.Unlock()
		fmt.Fprintf(w, `{"RequestId":"r","Credentials":{"AccessKeyId":%q,"AccessKeySecret":%q,"SecurityToken":%q,"Expiration":%q}}`,
			k.AccessKeyID, k.SecretAccessKey, k.SessionToken, time.Now().Add(5*time.Minute).UTC().Format(time.RFC3339))
	})
	var runner csidriver.Runner
	endpoint, _ := inProcessDriver(t, testLogger(t), func(o *csidriver.Options) { runner = o.Runner })
	c := nodeClient(t, endpoint)
	target := filepath.Join(shortTempDir(t), "mnt")
	vc := e.volumeContext()
	for k, v := range map[string]string{"authType": "rrsa", "roleArn": "acs:ram::1:role/r", "oidcProviderArn": "acs:ram::1:oidc-provider/p",
		"stsEndpoint": stsSrv.URL, contract.PodInfoServiceAccountTokens: saTokens(contract.DefaultAudienceRRSA, ststest.FakeToken, time.Now().Add(time.Hour))} {
		vc[k] = v
	}
	req := &csi.NodePublishVolumeRequest{VolumeId: "pv-rrsa", TargetPath: target, VolumeCapability: mountCapability(), VolumeContext: vc}
	ctx := context.Background()
	if _, err := c.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(func() {
		_, _ = c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pv-rrsa", TargetPath: target})
	})
	get := func(key string) ([]byte, error) {
		out, err := e.s3.Client(e.keys).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
		if err != nil {
			return nil, err
		}
		defer func() { _ = out.Body.Close() }()
		return io.ReadAll(out.Body)
	}
	writeAndCheck(t, target, "a.txt", "rrsa keys", get)
	st1 := serverStatus(t, runner, target)
	mu.Lock()
	first := issued[len(issued)-1]
	mu.Unlock()
	if st1.GetFingerprint() != first.Fingerprint() {
		t.Fatalf("server uses %s, STS issued %s", st1.GetFingerprint(), first.Fingerprint())
	}

	if _, err := c.NodePublishVolume(ctx, req); err != nil { // same token, keys within the window
		t.Fatalf("republish: %v", err)
	}
	st2 := serverStatus(t, runner, target)
	if st2.GetFingerprint() == st1.GetFingerprint() || st2.GetLastSwap().GetSource() != "csi-rrsa" {
		t.Fatalf("keys expiring within the refresh window were not renewed: %v", st2)
	}
	e.s3.RevokeKeys(first)
	writeAndCheck(t, target, "b.txt", "after the old keys were revoked", get)
	if b, err := os.ReadFile(filepath.Join(target, "a.txt")); err != nil || !bytes.Equal(b, []byte("rrsa keys")) {
		t.Errorf("read back a.txt = %q, %v", b, err)
	}
}
