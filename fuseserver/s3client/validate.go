package s3client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
)

var _ rotation.Validator = (*Client)(nil)
var _ rotation.Applier = (*Client)(nil)

// Validate sends one cheap signed request with k — a ListObjectsV2 of at
// most one key under the bucket and prefix — and classifies a failure as a
// *rotation.RefusalError whose message names the host and S3 error code.
// A GET is used rather than a HEAD because only a response body carries the
// error code (InvalidAccessKeyId and SignatureDoesNotMatch are both 403).
func (c *Client) Validate(ctx context.Context, k keys.Keys) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ValidateTimeout)
	defer cancel()
	in := &s3.ListObjectsV2Input{Bucket: aws.String(c.cfg.Bucket), MaxKeys: aws.Int32(1)}
	if c.cfg.Prefix != "" {
		in.Prefix = aws.String(c.cfg.Prefix)
	}
	static := aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}
	_, err := c.probe.ListObjectsV2(ctx, in, func(o *s3.Options) {
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return static, nil })
	})
	if err == nil {
		return nil
	}
	return c.Classify(ctx, err)
}

// Classify turns an S3 call's error into a *rotation.RefusalError. The
// message holds the host, the S3 error code or network condition, and
// nothing the caller sent.
func (c *Client) Classify(ctx context.Context, err error) *rotation.RefusalError {
	var api smithy.APIError
	if errors.As(err, &api) {
		code := api.ErrorCode()
		reason := rotation.ReasonOther
		switch code {
		case "InvalidAccessKeyId", "InvalidToken", "InvalidSecurity":
			reason = rotation.ReasonInvalidAccessKey
		case "SignatureDoesNotMatch":
			reason = rotation.ReasonSignatureMismatch
		case "AccessDenied", "AllAccessDisabled", "Forbidden":
			reason = rotation.ReasonAccessDenied
		case "NoSuchBucket":
			reason = rotation.ReasonBucketNotFound
		case "ExpiredToken", "TokenRefreshRequired":
			reason = rotation.ReasonExpiredToken
		default:
			var resp *awshttp.ResponseError
			hasStatus := errors.As(err, &resp)
			switch {
			case hasStatus && resp.HTTPStatusCode() == http.StatusForbidden:
				reason = rotation.ReasonAccessDenied
			case transientCodes[code] || (hasStatus && (resp.HTTPStatusCode() >= 500 || resp.HTTPStatusCode() == http.StatusTooManyRequests)):
				// Says nothing about the keys: a refusal the sender retries
				// (the sidecar does for an unreachable endpoint).
				return &rotation.RefusalError{Reason: rotation.ReasonEndpointUnreachable,
					Message: fmt.Sprintf("endpoint busy or failing, retried (host=%s, code=%s)", c.host, code)}
			}
		}
		return &rotation.RefusalError{Reason: reason,
			Message: fmt.Sprintf("%s (host=%s, code=%s)", reason, c.host, code)}
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return &rotation.RefusalError{Reason: rotation.ReasonTimeout,
			Message: fmt.Sprintf("timeout after %s (host=%s)", c.cfg.ValidateTimeout, c.host)}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return &rotation.RefusalError{Reason: rotation.ReasonTimeout,
			Message: fmt.Sprintf("timeout after %s (host=%s)", c.cfg.ValidateTimeout, c.host)}
	}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var certErr *tls.CertificateVerificationError
	var authorityErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.As(err, &certErr), errors.As(err, &authorityErr), errors.As(err, &hostErr):
		return unreachable(c.host, "TLS certificate not trusted")
	case errors.As(err, &dnsErr):
		return unreachable(c.host, "no such host")
	case errors.Is(err, syscall.ECONNREFUSED):
		return unreachable(c.host, "connection refused")
	case errors.Is(err, syscall.ECONNRESET):
		return unreachable(c.host, "connection reset")
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return unreachable(c.host, "no route to host")
	case errors.As(err, &opErr):
		return unreachable(c.host, opErr.Op+" failed")
	}
	return &rotation.RefusalError{Reason: rotation.ReasonOther,
		Message: fmt.Sprintf("request failed (host=%s)", c.host)}
}

func unreachable(host, why string) *rotation.RefusalError {
	return &rotation.RefusalError{Reason: rotation.ReasonEndpointUnreachable,
		Message: fmt.Sprintf("endpoint unreachable (host=%s, %s)", host, why)}
}

// transientCodes are S3 error codes of a server that is busy or failing
// for a moment, whatever the keys.
var transientCodes = map[string]bool{
	"InternalError": true, "ServiceUnavailable": true, "SlowDown": true, "SlowDownRead": true, "SlowDownWrite": true,
	"RequestTimeout": true, "Throttling": true, "ThrottlingException": true,
	"TooManyRequests": true, "TooManyRequestsException": true, "RequestLimitExceeded": true, "BandwidthLimitExceeded": true,
	"ServerBusy": true, "OperationAborted": true,
}
