package csidriver

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/csidriver/storageclass"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fusetest"
	"rekey.dev/rekey/internal/keys"
)

func mountCaps() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}}
}

func secretsFor(k keys.Keys) map[string]string {
	return map[string]string{"akId": k.AccessKeyID, "akSecret": k.SecretAccessKey}
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), substr) {
		t.Fatalf("err = %v, want %s containing %q", err, code, substr)
	}
}

func bucketExists(t *testing.T, srv *fusetest.Server, bucket string) bool {
	t.Helper()
	_, err := srv.Client(srv.Admin).HeadBucket(t.Context(), &s3.HeadBucketInput{Bucket: aws.String(bucket)})
	return err == nil
}

// TestControllerPrefixMode creates a prefix volume in a shared bucket of
// the in-process S3 server, writes objects under it (and under a sibling
// prefix that shares its name as a string prefix), and deletes it with a
// small per-call bound: each call removes at most that many objects and
// answers ABORTED while more remain; a new controller instance (a
// restarted rekey-controller) carries on; the sibling is untouched.
func TestControllerPrefixMode(t *testing.T) {
	t.Parallel()
	srv := fusetest.StartFake(t)
	ctx := t.Context()
	cs := NewControllerServer(ControllerOptions{MaxDeletesPerCall: 7, Log: logr.Discard()})
	params := map[string]string{"bucket": fusetest.Bucket, "url": srv.URL, "otherOpts": "-o use_path_request_style",
		"pathPattern": "${pvc.namespace}/${pvc.name}", storageclass.MetaPVCName: "data", storageclass.MetaPVCNamespace: "team",
		storageclass.MetaPVName: "pvc-1"}
	req := &csi.CreateVolumeRequest{Name: "pvc-1", Parameters: params, VolumeCapabilities: mountCaps(), Secrets: secretsFor(srv.Admin)}
	resp, err := cs.CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	vc := resp.GetVolume().GetVolumeContext()
	if vc["bucket"] != fusetest.Bucket || vc["path"] != "team/data" || vc["url"] != srv.URL || vc["otherOpts"] != "use_path_request_style" {
		t.Errorf("volume context = %v", vc)
	}
	again, err := cs.CreateVolume(ctx, req)
	if err != nil || again.GetVolume().GetVolumeId() != resp.GetVolume().GetVolumeId() {
		t.Fatalf("second CreateVolume: %v, %v", again, err)
	}
	if got := srv.Keys(t, "team/data/"); len(got) != 1 || got[0] != "team/data/" {
		t.Fatalf("after CreateVolume: %v, want the directory object", got)
	}
	for i := range 20 {
		srv.Put(t, fmt.Sprintf("team/data/d%d/f%d", i%3, i), []byte("x"))
	}
	srv.Put(t, "team/data2/keep", []byte("sibling"))
	srv.Put(t, "team/data", []byte("a file named like the prefix"))

	id := resp.GetVolume().GetVolumeId()
	del := &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secretsFor(srv.Admin)}
	_, err = cs.DeleteVolume(ctx, del)
	wantCode(t, err, codes.Aborted, "deleted 7 objects")
	if n := len(srv.Keys(t, "team/data/")); n != 21-7 {
		t.Fatalf("%d objects left after one bounded call, want %d", n, 21-7)
	}
	restarted := NewControllerServer(ControllerOptions{MaxDeletesPerCall: 7, Log: logr.Discard()})
	calls := 1
	for {
		calls++
		if _, err = restarted.DeleteVolume(ctx, del); status.Code(err) != codes.Aborted {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Errorf("%d DeleteVolume calls for 21 objects at 7 a call, want 3", calls)
	}
	if left := srv.Keys(t, "team/data/"); len(left) != 0 {
		t.Errorf("left under the prefix: %v", left)
	}
	if string(srv.MustGet(t, "team/data2/keep")) != "sibling" || string(srv.MustGet(t, "team/data")) == "" {
		t.Error("DeleteVolume touched objects outside its prefix")
	}
	if _, err := cs.DeleteVolume(ctx, del); err != nil {
		t.Errorf("DeleteVolume of a deleted volume: %v", err)
	}
}

// TestControllerBucketMode creates a bucket per volume, retries, refuses a
// name another bucket already has, and deletes only a bucket that holds
// its ownership marker.
func TestControllerBucketMode(t *testing.T) {
	t.Parallel()
	srv := fusetest.StartFake(t)
	ctx := t.Context()
	cs := NewControllerServer(ControllerOptions{Log: logr.Discard()})
	params := map[string]string{"url": srv.URL, "otherOpts": "-o use_path_request_style"}
	create := func(name string) (*csi.CreateVolumeResponse, error) {
		return cs.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, Parameters: params, VolumeCapabilities: mountCaps(),
			Secrets: secretsFor(srv.Admin)})
	}
	resp, err := create("PVC-aa11")
	if err != nil {
		t.Fatal(err)
	}
	vc := resp.GetVolume().GetVolumeContext()
	if vc["bucket"] != "pvc-aa11" || vc["path"] != "" {
		t.Fatalf("volume context = %v", vc)
	}
	if !bucketExists(t, srv, "pvc-aa11") {
		t.Fatal("bucket pvc-aa11 was not created")
	}
	if again, err := create("PVC-aa11"); err != nil || again.GetVolume().GetVolumeId() != resp.GetVolume().GetVolumeId() {
		t.Fatalf("retried CreateVolume: %v, %v", again, err)
	}
	// "pvc-aa11" maps to the same bucket but is another volume: a collision.
	_, err = create("pvc-aa11")
	wantCode(t, err, codes.AlreadyExists, `bucket name collision: bucket "pvc-aa11" already exists`)
	// A bucket someone else made has no marker: a collision too.
	if _, err := srv.Client(srv.Admin).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("pvc-theirs")}); err != nil {
		t.Fatal(err)
	}
	_, err = create("pvc-theirs")
	wantCode(t, err, codes.AlreadyExists, "bucket name collision")

	_, err = srv.Client(srv.Admin).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("pvc-aa11"), Key: aws.String("app/data.bin"),
		Body: bytes.NewReader([]byte("data"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(), Secrets: secretsFor(srv.Admin)}); err != nil {
		t.Fatal(err)
	}
	if bucketExists(t, srv, "pvc-aa11") {
		t.Error("the volume's bucket still exists after DeleteVolume")
	}
	if _, err := cs.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(), Secrets: secretsFor(srv.Admin)}); err != nil {
		t.Errorf("DeleteVolume of a deleted bucket: %v", err)
	}

	// A handle naming a bucket rekey did not create (no marker): kept.
	foreign, _ := contract.ProvisionedVolume{Mode: contract.VolumeModeBucket, PathStyle: true, Bucket: "pvc-theirs", Endpoint: srv.URL}.String()
	_, err = cs.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: foreign, Secrets: secretsFor(srv.Admin)})
	wantCode(t, err, codes.FailedPrecondition, "holds no rekey ownership marker")
	if !bucketExists(t, srv, "pvc-theirs") {
		t.Error("DeleteVolume deleted a bucket rekey did not create")
	}
}

// TestControllerErrors: what CreateVolume answers a user can act on, and
// that no answer quotes a secret.
func TestControllerErrors(t *testing.T) {
	t.Parallel()
	srv := fusetest.StartFake(t)
	ctx := t.Context()
	cs := NewControllerServer(ControllerOptions{Log: logr.Discard()})
	good := map[string]string{"bucket": fusetest.Bucket, "url": srv.URL, "otherOpts": "-o use_path_request_style"}
	wrongSecret := keys.Keys{AccessKeyID: srv.Admin.AccessKeyID, SecretAccessKey: "wrong-secret-value-0123456789"}
	for _, tc := range []struct {
		name    string
		params  map[string]string
		secrets map[string]string
		caps    []*csi.VolumeCapability
		code    codes.Code
		msg     string
	}{
		{name: "unknown access key", params: good, secrets: secretsFor(fakes3Keys("NOBODY")), code: codes.PermissionDenied, msg: "access key does not exist"},
		{name: "wrong secret", params: good, secrets: secretsFor(wrongSecret), code: codes.PermissionDenied, msg: "secret key mismatch"},
		{name: "no keys", params: good, secrets: map[string]string{}, code: codes.InvalidArgument, msg: "provisioner Secret"},
		{name: "missing bucket", params: map[string]string{"bucket": "nope", "url": srv.URL, "otherOpts": "-o use_path_request_style"},
			secrets: secretsFor(srv.Admin), code: codes.FailedPrecondition, msg: `bucket not found: "nope"`},
		{name: "bad template", params: map[string]string{"bucket": "bkt", "url": srv.URL, "pathPattern": "${pvc.uid}"},
			secrets: secretsFor(srv.Admin), code: codes.InvalidArgument, msg: "${pvc.uid} is not allowed here"},
		{name: "no endpoint", params: map[string]string{"bucket": "bkt"}, secrets: secretsFor(srv.Admin), code: codes.InvalidArgument, msg: "S3 endpoint is required"},
		{name: "block", params: good, secrets: secretsFor(srv.Admin), caps: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
			code: codes.InvalidArgument, msg: "block access is not supported"},
		{name: "unreachable", params: map[string]string{"bucket": "bkt", "url": "http://127.0.0.1:1", "otherOpts": "-o use_path_request_style"},
			secrets: secretsFor(srv.Admin), code: codes.Unavailable, msg: "endpoint unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			caps := tc.caps
			if caps == nil {
				caps = mountCaps()
			}
			_, err := cs.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-e", Parameters: tc.params, VolumeCapabilities: caps, Secrets: tc.secrets})
			wantCode(t, err, tc.code, tc.msg)
			for _, v := range tc.secrets {
				if strings.Contains(v, "secret") && strings.Contains(err.Error(), v) {
					t.Errorf("error quotes a secret: %v", err)
				}
			}
			if strings.Contains(err.Error(), srv.Admin.SecretAccessKey) || strings.Contains(err.Error(), wrongSecret.SecretAccessKey) {
				t.Errorf("error quotes a secret: %v", err)
			}
		})
	}
}

func fakes3Keys(prefix string) keys.Keys {
	return keys.Keys{AccessKeyID: prefix + "0123456789", SecretAccessKey: prefix + "-secret-0123456789abcdef"}
}

// TestControllerExpandAndValidate: expansion only records the size;
// ValidateVolumeCapabilities finds the bucket.
func TestControllerExpandAndValidate(t *testing.T) {
	t.Parallel()
	srv := fusetest.StartFake(t)
	ctx := t.Context()
	cs := NewControllerServer(ControllerOptions{Log: logr.Discard()})
	id, _ := contract.ProvisionedVolume{Mode: contract.VolumeModePrefix, PathStyle: true, Bucket: fusetest.Bucket, Prefix: "x", Endpoint: srv.URL}.String()
	exp, err := cs.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 5 << 30}})
	if err != nil || exp.GetCapacityBytes() != 5<<30 || exp.GetNodeExpansionRequired() {
		t.Fatalf("expand: %v, %v", exp, err)
	}
	v, err := cs.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: mountCaps(), Secrets: secretsFor(srv.Admin)})
	if err != nil || v.GetConfirmed() == nil {
		t.Fatalf("validate: %v, %v", v, err)
	}
	gone, _ := contract.ProvisionedVolume{Mode: contract.VolumeModeBucket, PathStyle: true, Bucket: "pvc-gone", Endpoint: srv.URL}.String()
	_, err = cs.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: gone, VolumeCapabilities: mountCaps(), Secrets: secretsFor(srv.Admin)})
	wantCode(t, err, codes.NotFound, `bucket "pvc-gone" does not exist`)
}
