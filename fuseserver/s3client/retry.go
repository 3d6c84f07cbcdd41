package s3client

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// authErrorCodes are the S3 error codes a request signed with revoked or
// replaced keys fails with.
var authErrorCodes = map[string]bool{
	"InvalidAccessKeyId":    true,
	"SignatureDoesNotMatch": true,
	"AccessDenied":          true,
	"ExpiredToken":          true,
	"InvalidToken":          true,
	"TokenRefreshRequired":  true,
	"Forbidden":             true, // HEAD responses carry no body, only the status
}

// IsAuthError reports whether err is an S3 authentication or authorisation failure.
func IsAuthError(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && authErrorCodes[api.ErrorCode()]
}

// swappedDuringRequestError marks an authentication failure of a request
// that was signed with keys replaced while it was in flight. The SDK's
// retryer retries errors whose RetryableError method returns true.
type swappedDuringRequestError struct{ err error }

func (e *swappedDuringRequestError) Error() string        { return e.err.Error() }
func (e *swappedDuringRequestError) Unwrap() error        { return e.err }
func (e *swappedDuringRequestError) RetryableError() bool { return true }

// authRetry sits in the Finalize step right after the SDK's retry
// middleware, so it runs once per attempt, before the attempt resolves its
// credentials and signs.
type authRetry struct{ provider *Provider }

func (*authRetry) ID() string { return "rekey.AuthRetry" }

func (m *authRetry) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	before := m.provider.snapshot()
	out, md, err := next.HandleFinalize(ctx, in)
	if err != nil && IsAuthError(err) && m.provider.snapshot() != before {
		err = &swappedDuringRequestError{err: err}
	}
	return out, md, err
}

func addAuthRetry(p *Provider) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Finalize.Insert(&authRetry{provider: p}, "Retry", middleware.After)
	}
}

// backoff retries a swap-caused failure at once and defers to the standard
// jittered backoff for everything else.
type backoff struct{ std retry.BackoffDelayer }

func (b backoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	var swapped *swappedDuringRequestError
	if errors.As(err, &swapped) {
		return 0, nil
	}
	return b.std.BackoffDelay(attempt, err)
}

// newProbeRetryer is the retryer of Validate's probe: a server that is busy
// or failing for a moment (503 SlowDown, 500 InternalError, throttling, a
// reset connection) is asked again, up to three times with a short
// jittered backoff, within the validation timeout; an answer about the keys
// (InvalidAccessKeyId, SignatureDoesNotMatch...) is final at once.
// Connection errors are not retried: an endpoint that does not answer is
// reported as such at once (the sender retries those refusals).
func newProbeRetryer() aws.Retryer {
	codes := map[string]struct{}{}
	for c, transient := range transientCodes {
		if transient {
			codes[c] = struct{}{}
		}
	}
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 3
		o.MaxBackoff = time.Second
		o.RateLimiter = ratelimit.None
		o.Retryables = []retry.IsErrorRetryable{
			retry.RetryableHTTPStatusCode{Codes: map[int]struct{}{429: {}, 500: {}, 502: {}, 503: {}, 504: {}}},
			retry.RetryableErrorCode{Codes: codes},
		}
	})
}

// newRetryer returns the standard retryer without a client-side retry quota
// (a burst of swap-caused retries must never exhaust it) and with immediate
// retries after a swap.
func newRetryer(maxAttempts int) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.RateLimiter = ratelimit.None
		o.Backoff = backoff{std: retry.NewExponentialJitterBackoff(o.MaxBackoff)}
	})
}
