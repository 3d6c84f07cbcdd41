package csidriver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/fuseserver/s3client"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/sts"
)

// PrecheckKind classifies why a volume cannot be mounted.
type PrecheckKind int

// Kinds of PrecheckError.
const (
	PrecheckDenied      PrecheckKind = iota // keys, permissions, missing bucket or path
	PrecheckUnreachable                     // endpoint unreachable or timeout
	PrecheckInternal                        // the check itself failed
)

// PrecheckError says, in words a user can act on, why a volume's keys or
// location do not work. It never contains a secret value.
type PrecheckError struct {
	Kind    PrecheckKind
	Message string
}

func (e *PrecheckError) Error() string { return e.Message }

// Precheck sends one signed listing with the volume's keys, before
// anything is mounted, and checks that the path (prefix) exists.
func Precheck(ctx context.Context, v volumecontext.Volume) error {
	prefix := ""
	if v.Prefix != "" {
		prefix = v.Prefix + "/"
	}
	c, err := s3client.New(s3client.Config{Endpoint: v.Endpoint, Region: v.Region, Bucket: v.Bucket, Prefix: prefix,
		PathStyle: v.Options.PathStyle, MaxAttempts: 1}, v.Keys)
	if err != nil {
		return &PrecheckError{Kind: PrecheckInternal, Message: err.Error()}
	}
	if err := c.Validate(ctx, v.Keys); err != nil {
		var ref *rotation.RefusalError
		if errors.As(err, &ref) {
			return refusal(v, c.Host(), ref)
		}
		return &PrecheckError{Kind: PrecheckInternal, Message: err.Error()}
	}
	if prefix == "" {
		return nil
	}
	out, err := c.API().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(v.Bucket),
		Prefix: aws.String(prefix), MaxKeys: aws.Int32(1)})
	if err != nil {
		return refusal(v, c.Host(), c.Classify(ctx, err))
	}
	if len(out.Contents) == 0 && len(out.CommonPrefixes) == 0 {
		return &PrecheckError{Kind: PrecheckDenied, Message: fmt.Sprintf(
			"path not found: %q in bucket %q (volume attribute path; create the folder or fix the attribute)", v.Prefix, v.Bucket)}
	}
	return nil
}

func refusal(v volumecontext.Volume, host string, ref *rotation.RefusalError) *PrecheckError {
	code := ""
	if _, after, ok := strings.Cut(ref.Message, "code="); ok {
		code = strings.TrimSuffix(after, ")")
	}
	ak, from := v.Keys.AccessKeyID, keySource(v)
	switch ref.Reason {
	case rotation.ReasonInvalidAccessKey:
		if code == "" || code == "InvalidAccessKeyId" {
			code = "InvalidAccessKeyId"
		}
		return &PrecheckError{Kind: PrecheckDenied, Message: fmt.Sprintf(
			"access key does not exist (%s): access key ID %q from %s is unknown to %s", code, ak, from, host)}
	case rotation.ReasonSignatureMismatch:
		return &PrecheckError{Kind: PrecheckDenied, Message: fmt.Sprintf(
			"secret key mismatch (SignatureDoesNotMatch): the secret key from %s does not belong to access key ID %q", from, ak)}
	case rotation.ReasonAccessDenied:
		return &PrecheckError{Kind: PrecheckDenied, Message: fmt.Sprintf(
			"no read permission on bucket/prefix (AccessDenied): access key ID %q may not list bucket %q path %q", ak, v.Bucket, v.Prefix)}
	case rotation.ReasonBucketNotFound:
		return &PrecheckError{Kind: PrecheckDenied, Message: fmt.Sprintf(
			"bucket not found: %q on %s (volume attribute bucket)", v.Bucket, host)}
	case rotation.ReasonTimeout:
		return &PrecheckError{Kind: PrecheckUnreachable, Message: fmt.Sprintf("endpoint unreachable: %s (timeout)", host)}
	case rotation.ReasonEndpointUnreachable:
		why := "unreachable"
		if _, after, ok := strings.Cut(ref.Message, ", "); ok {
			why = strings.TrimSuffix(after, ")")
		}
		return &PrecheckError{Kind: PrecheckUnreachable, Message: fmt.Sprintf("endpoint unreachable: %s (%s)", host, why)}
	case rotation.ReasonExpiredToken:
		return &PrecheckError{Kind: PrecheckDenied, Message: fmt.Sprintf(
			"session token expired (ExpiredToken): the temporary keys from %s for access key ID %q", from, ak)}
	}
	return &PrecheckError{Kind: PrecheckDenied, Message: "S3 refused the keys: " + ref.Message}
}

// keySource names where v's keys came from, for messages: the Secret, or
// the STS that exchanged the service-account token (NodePublishVolume
// replaces v.Keys with the exchanged keys when kubelet passed a token).
func keySource(v volumecontext.Volume) string {
	if v.Token.IsZero() {
		return "the Secret"
	}
	action := sts.WebIdentityAction
	if v.AuthType == contract.AuthTypeRRSA {
		action = sts.OIDCAction
	}
	return "the STS (" + action + ")"
}
