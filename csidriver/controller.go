package csidriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/csidriver/storageclass"
	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/fuseserver/s3client"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

var _ csi.ControllerServer = (*controllerServer)(nil)

// DefaultMaxDeletesPerCall is ControllerOptions.MaxDeletesPerCall's default.
const DefaultMaxDeletesPerCall = 5000

// ControllerOptions configure the Controller service.
type ControllerOptions struct {
	// MaxDeletesPerCall bounds the objects one DeleteVolume removes, so a
	// call stays short; when more remain it answers ABORTED and the caller
	// calls again (the listing starts over, so a restarted controller
	// resumes where the last one stopped). Default DefaultMaxDeletesPerCall.
	MaxDeletesPerCall int
	// Log is the service's logger.
	Log logr.Logger
}

// controllerServer provisions volumes: a prefix in a shared bucket, or a
// bucket of their own. It keeps no state: the volume handle encodes what
// DeleteVolume needs (contract.ProvisionedVolume) and the keys come with
// every request (the provisioner Secret).
type controllerServer struct {
	csi.UnimplementedControllerServer
	maxDeletes int
	log        logr.Logger
}

// NewControllerServer returns the CSI Controller service.
func NewControllerServer(opts ControllerOptions) csi.ControllerServer {
	if opts.MaxDeletesPerCall <= 0 {
		opts.MaxDeletesPerCall = DefaultMaxDeletesPerCall
	}
	return &controllerServer{maxDeletes: opts.MaxDeletesPerCall, log: opts.Log}
}

func (s *controllerServer) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// checkCapabilities refuses block volumes: a bucket is only a filesystem.
// Every access mode is served (S3 is shared storage).
func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return errors.New("volume capabilities are required")
	}
	for _, c := range caps {
		if c.GetBlock() != nil {
			return errors.New("block access is not supported: a bucket is served as a filesystem")
		}
		if c.GetMount() == nil {
			return errors.New("a volume capability has no access type")
		}
		if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
			return errors.New("a volume capability has no access mode")
		}
	}
	return nil
}

func (s *controllerServer) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volumes cannot be created from a snapshot or another volume")
	}
	if r := req.GetCapacityRange(); r != nil && r.GetLimitBytes() > 0 && r.GetRequiredBytes() > r.GetLimitBytes() {
		return nil, status.Error(codes.OutOfRange, "required_bytes exceeds limit_bytes")
	}
	class, err := storageclass.Parse(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), storageclass.ErrInvalid.Error()+": "))
	}
	log := s.log.WithValues("volume", name)
	for _, w := range class.Warnings {
		log.Info("StorageClass parameter ignored", "warning", w)
	}
	secrets := req.GetSecrets()
	endpoint, region := class.Endpoint, class.Region
	if endpoint == "" && secrets[contract.SecretKeyEndpoint] != "" {
		u, err := s3client.ParseEndpoint(secrets[contract.SecretKeyEndpoint])
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "provisioner Secret key %s: %s", contract.SecretKeyEndpoint,
				strings.TrimPrefix(err.Error(), "s3client: "))
		}
		endpoint = u.String()
	}
	if endpoint == "" {
		return nil, status.Error(codes.InvalidArgument, "the S3 endpoint is required: StorageClass parameter url (or \"endpoint\" in the provisioner Secret)")
	}
	if region == "" {
		region = secrets[contract.SecretKeyRegion]
	}
	k, err := secretKeys(secrets)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	pv := contract.ProvisionedVolume{Mode: contract.VolumeModePrefix, PathStyle: class.Options.PathStyle,
		Bucket: class.Bucket, Region: region, Endpoint: endpoint}
	if class.BucketMode() {
		pv.Mode = contract.VolumeModeBucket
		if pv.Bucket, err = storageclass.BucketName(name); err != nil {
			return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), storageclass.ErrInvalid.Error()+": "))
		}
	} else if pv.Prefix, err = class.Prefix(name, req.GetParameters()); err != nil {
		return nil, status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), storageclass.ErrInvalid.Error()+": "))
	}
	id, err := pv.String()
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := newS3(pv, k)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if pv.Mode == contract.VolumeModeBucket {
		err = s.createBucket(ctx, c, pv, k, name)
	} else {
		err = s.createPrefix(ctx, c, pv, k)
	}
	if err != nil {
		return nil, err
	}
	attrs := map[string]string{contract.VolumeAttrBucket: pv.Bucket, contract.VolumeAttrURL: pv.Endpoint}
	if pv.Prefix != "" {
		attrs[contract.VolumeAttrPath] = pv.Prefix
	}
	if pv.Region != "" {
		attrs[contract.VolumeAttrRegion] = pv.Region
	}
	if class.RawOptions != "" {
		attrs[contract.VolumeAttrOtherOpts] = class.RawOptions
	}
	for a, v := range class.Attributes {
		attrs[a] = v
	}
	log.Info("volume created", "volumeId", id)
	// A bucket has no capacity: 0 says "unknown" (the PV keeps the claim's request).
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, VolumeContext: attrs}}, nil
}

// secretKeys reads the access keys of a provisioner Secret; errors name
// Secret keys, never values.
func secretKeys(secrets map[string]string) (keys.Keys, error) {
	k, err := keys.FromSecret(secrets)
	if err == nil {
		err = k.Validate()
	}
	if err != nil {
		return keys.Keys{}, fmt.Errorf("provisioner Secret: %s", strings.TrimPrefix(err.Error(), "keys: "))
	}
	return k, nil
}

// clientFor returns a client of pv's endpoint signed with the Secret's keys.
func clientFor(pv contract.ProvisionedVolume, secrets map[string]string) (*s3client.Client, keys.Keys, error) {
	k, err := secretKeys(secrets)
	if err != nil {
		return nil, keys.Keys{}, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := newS3(pv, k)
	if err != nil {
		return nil, keys.Keys{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return c, k, nil
}

func newS3(pv contract.ProvisionedVolume, k keys.Keys) (*s3client.Client, error) {
	return s3client.New(s3client.Config{Endpoint: pv.Endpoint, Region: pv.Region, Bucket: pv.Bucket,
		PathStyle: pv.PathStyle, MaxAttempts: 3}, k)
}

// s3Error turns an S3 failure into a gRPC status whose message a user can
// act on (Precheck's wording: host, S3 code, access key ID, never a secret).
func s3Error(ctx context.Context, c *s3client.Client, pv contract.ProvisionedVolume, k keys.Keys, what string, err error) error {
	var ref *rotation.RefusalError
	if !errors.As(err, &ref) {
		ref = c.Classify(ctx, err)
	}
	pe := refusal(volumecontext.Volume{Bucket: pv.Bucket, Prefix: pv.Prefix, Keys: k}, c.Host(), ref)
	code := codes.FailedPrecondition
	switch {
	case pe.Kind == PrecheckUnreachable:
		code = codes.Unavailable
	case strings.Contains(pe.Message, "AccessDenied"), strings.Contains(pe.Message, "access key does not exist"),
		strings.Contains(pe.Message, "secret key mismatch"):
		code = codes.PermissionDenied
	}
	return status.Errorf(code, "%s: %s", what, pe.Message)
}

func apiCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// createPrefix checks the keys against the shared bucket and writes the
// prefix's directory object, so the prefix exists when the node mounts it.
func (s *controllerServer) createPrefix(ctx context.Context, c *s3client.Client, pv contract.ProvisionedVolume, k keys.Keys) error {
	if err := c.Validate(ctx, k); err != nil {
		return s3Error(ctx, c, pv, k, "checking the provisioner Secret's keys on the shared bucket", err)
	}
	_, err := c.API().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(pv.Bucket), Key: aws.String(pv.Prefix + "/"),
		Body: bytes.NewReader(nil), ContentLength: aws.Int64(0)})
	if err != nil {
		return s3Error(ctx, c, pv, k, fmt.Sprintf("creating prefix %q in bucket %q", pv.Prefix, pv.Bucket), err)
	}
	return nil
}

// createBucket creates the volume's bucket and marks it as rekey's. A
// bucket that exists already is this volume's only when it holds the
// marker of this name (a retried CreateVolume); otherwise the name is taken.
func (s *controllerServer) createBucket(ctx context.Context, c *s3client.Client, pv contract.ProvisionedVolume, k keys.Keys, name string) error {
	in := &s3.CreateBucketInput{Bucket: aws.String(pv.Bucket)}
	if pv.Region != "" && pv.Region != s3client.DefaultRegion {
		in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(pv.Region)}
	}
	_, err := c.API().CreateBucket(ctx, in)
	switch code := apiCode(err); {
	case err == nil:
	case code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists":
		m, merr := readMarker(ctx, c, pv.Bucket)
		if merr == nil && m.Volume == name {
			return nil // created by an earlier call for this volume
		}
		return status.Errorf(codes.AlreadyExists,
			"bucket name collision: bucket %q already exists and was not created by rekey for volume %q", pv.Bucket, name)
	case code == "AccessDenied":
		return status.Errorf(codes.PermissionDenied,
			"access denied creating bucket %q (AccessDenied): the provisioner Secret's keys (access key ID %q) may not create buckets; grant s3:CreateBucket or give the StorageClass a shared bucket", pv.Bucket, k.AccessKeyID)
	default:
		return s3Error(ctx, c, pv, k, fmt.Sprintf("creating bucket %q", pv.Bucket), err)
	}
	body, _ := json.Marshal(contract.BucketMarker{Version: contract.BucketMarkerVersion1, Volume: name})
	if _, err := c.API().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(pv.Bucket), Key: aws.String(contract.BucketMarkerKey),
		Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))}); err != nil {
		return s3Error(ctx, c, pv, k, fmt.Sprintf("writing the ownership marker into bucket %q", pv.Bucket), err)
	}
	return nil
}

// errNoMarker: the bucket has no (readable) ownership marker.
var errNoMarker = errors.New("no rekey ownership marker")

func readMarker(ctx context.Context, c *s3client.Client, bucket string) (contract.BucketMarker, error) {
	out, err := c.API().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(contract.BucketMarkerKey)})
	if err != nil {
		if apiCode(err) == "NoSuchKey" {
			return contract.BucketMarker{}, errNoMarker
		}
		return contract.BucketMarker{}, err
	}
	defer func() { _ = out.Body.Close() }()
	var m contract.BucketMarker
	b, err := io.ReadAll(io.LimitReader(out.Body, 4096))
	if err != nil {
		return contract.BucketMarker{}, err
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Version != contract.BucketMarkerVersion1 || m.Volume == "" {
		return contract.BucketMarker{}, fmt.Errorf("%w: %s does not parse as version %d", errNoMarker, contract.BucketMarkerKey, contract.BucketMarkerVersion1)
	}
	return m, nil
}

func (s *controllerServer) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	pv, err := contract.ParseVolumeID(id)
	if err != nil {
		// Not a handle this controller wrote: nothing of it to delete.
		s.log.Info("DeleteVolume of a handle rekey did not provision: nothing deleted", "volumeId", id, "why", err.Error())
		return &csi.DeleteVolumeResponse{}, nil //nolint:nilerr // CSI: deleting an unknown volume succeeds
	}
	c, k, err := clientFor(pv, req.GetSecrets())
	if err != nil {
		return nil, err
	}
	log := s.log.WithValues("volumeId", id)
	if pv.Mode == contract.VolumeModeBucket {
		switch _, err := readMarker(ctx, c, pv.Bucket); {
		case apiCode(err) == "NoSuchBucket":
			return &csi.DeleteVolumeResponse{}, nil
		case errors.Is(err, errNoMarker):
			return nil, status.Errorf(codes.FailedPrecondition,
				"bucket %q holds no rekey ownership marker (%s): rekey did not create it, or an earlier deletion was interrupted after removing the marker; it is kept: delete it by hand if it is this volume's", pv.Bucket, contract.BucketMarkerKey)
		case err != nil:
			return nil, s3Error(ctx, c, pv, k, fmt.Sprintf("reading the ownership marker of bucket %q", pv.Bucket), err)
		}
	}
	prefix := ""
	if pv.Mode == contract.VolumeModePrefix {
		prefix = pv.Prefix + "/"
	}
	n, more, err := s.deleteObjects(ctx, c, pv, prefix)
	if err != nil {
		if apiCode(err) == "NoSuchBucket" {
			return &csi.DeleteVolumeResponse{}, nil
		}
		return nil, s3Error(ctx, c, pv, k, fmt.Sprintf("deleting objects under %q in bucket %q", prefix, pv.Bucket), err)
	}
	if more {
		log.Info("deletion continues", "deleted", n)
		return nil, status.Errorf(codes.Aborted, "deleted %d objects of bucket %q prefix %q; more remain: call again", n, pv.Bucket, prefix)
	}
	if pv.Mode == contract.VolumeModeBucket {
		for _, step := range []func() error{
			func() error {
				_, err := c.API().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(pv.Bucket), Key: aws.String(contract.BucketMarkerKey)})
				return err
			},
			func() error {
				_, err := c.API().DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(pv.Bucket)})
				return err
			},
		} {
			if err := step(); err != nil && apiCode(err) != "NoSuchBucket" {
				return nil, s3Error(ctx, c, pv, k, fmt.Sprintf("deleting bucket %q", pv.Bucket), err)
			}
		}
	}
	log.Info("volume deleted", "objects", n)
	return &csi.DeleteVolumeResponse{}, nil
}

// deleteObjects deletes up to s.maxDeletes objects under prefix, a page
// (at most 1000 keys, one DeleteObjects call) at a time; more reports
// whether objects remain. In a bucket of its own the ownership marker is
// kept for last.
func (s *controllerServer) deleteObjects(ctx context.Context, c *s3client.Client, pv contract.ProvisionedVolume, prefix string) (n int, more bool, err error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(pv.Bucket), MaxKeys: aws.Int32(1000)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	p := s3.NewListObjectsV2Paginator(c.API(), in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return n, false, err
		}
		var ids []s3types.ObjectIdentifier
		for _, o := range page.Contents {
			if prefix == "" && aws.ToString(o.Key) == contract.BucketMarkerKey {
				continue
			}
			if n+len(ids) >= s.maxDeletes {
				more = true
				break
			}
			ids = append(ids, s3types.ObjectIdentifier{Key: o.Key})
		}
		if len(ids) > 0 {
			out, err := c.API().DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(pv.Bucket),
				Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
			if err != nil {
				return n, false, err
			}
			if len(out.Errors) > 0 {
				e := out.Errors[0]
				return n, false, fmt.Errorf("%d of %d objects not deleted, first %q: %s", len(out.Errors), len(ids),
					aws.ToString(e.Key), aws.ToString(e.Code))
			}
			n += len(ids)
		}
		if more {
			return n, true, nil
		}
	}
	return n, false, nil
}

func (s *controllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	pv, err := contract.ParseVolumeID(req.GetVolumeId())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %q: %s", req.GetVolumeId(), strings.TrimPrefix(err.Error(), "contract: "))
	}
	if len(req.GetSecrets()) > 0 {
		c, k, err := clientFor(pv, req.GetSecrets())
		if err != nil {
			return nil, err
		}
		if _, err := c.API().HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(pv.Bucket)}); err != nil {
			var nf *s3types.NotFound
			if errors.As(err, &nf) || apiCode(err) == "NoSuchBucket" {
				return nil, status.Errorf(codes.NotFound, "volume %q: bucket %q does not exist", req.GetVolumeId(), pv.Bucket)
			}
			return nil, s3Error(ctx, c, pv, k, fmt.Sprintf("checking bucket %q", pv.Bucket), err)
		}
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil //nolint:nilerr // CSI: unsupported capabilities are an answer (no Confirmed), not an error
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters()}}, nil
}

// ControllerExpandVolume accepts any size and changes nothing: a bucket or
// prefix has no capacity, so the new size is only the PV's metadata.
func (s *controllerServer) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	r := req.GetCapacityRange()
	if r == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity range is required")
	}
	if _, err := contract.ParseVolumeID(req.GetVolumeId()); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %q: %s", req.GetVolumeId(), strings.TrimPrefix(err.Error(), "contract: "))
	}
	size := r.GetRequiredBytes()
	if size == 0 {
		size = r.GetLimitBytes()
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: false}, nil
}
