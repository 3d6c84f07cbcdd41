package s3fs

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// Errno maps an error from an S3 call (or from local staging I/O) to the
// errno the filesystem returns. It matches on error types and S3 error codes
// (smithy.APIError, awshttp.ResponseError), never on messages:
//
//   - nil → 0
//   - context.DeadlineExceeded, net timeouts, S3 RequestTimeout, HTTP 408/504 → ETIMEDOUT
//   - context.Canceled (the request was cancelled: the mount is going away;
//     signals never cancel one, see MountOptions) → EINTR
//   - NoSuchKey, NotFound, HTTP 404 → ENOENT
//   - AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken
//     and the other credential codes, HTTP 401/403 → EACCES
//   - EntityTooLarge → EFBIG, KeyTooLongError → ENAMETOOLONG
//   - NoSuchBucket → EIO. A missing bucket is a broken mount, not a missing
//     file: ENOENT would make every file look deleted and invite programs to
//     "recreate" them; EIO tells them the storage failed.
//   - a syscall.Errno in the chain (staging disk full, ...) → that errno
//   - anything else (5xx, SlowDown, network errors) → EIO
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return syscall.ETIMEDOUT
	}
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if errno, ok := codeErrnos[apiErr.ErrorCode()]; ok {
			return errno
		}
	}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) && respErr.ResponseError != nil && respErr.Response != nil && respErr.Response.Response != nil {
		switch respErr.HTTPStatusCode() {
		case http.StatusNotFound:
			return syscall.ENOENT
		case http.StatusUnauthorized, http.StatusForbidden:
			return syscall.EACCES
		case http.StatusRequestTimeout, http.StatusGatewayTimeout:
			return syscall.ETIMEDOUT
		}
		return syscall.EIO
	}
	// Network failures: the errno inside (ECONNREFUSED...) means nothing
	// to the caller of a file operation.
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		if opErr.Timeout() {
			return syscall.ETIMEDOUT
		}
		return syscall.EIO
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return syscall.ETIMEDOUT
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno
	}
	return syscall.EIO
}

// codeErrnos maps S3 error codes that have a more precise errno than EIO.
var codeErrnos = map[string]syscall.Errno{
	"NoSuchKey": syscall.ENOENT,
	"NotFound":  syscall.ENOENT,

	"AccessDenied":          syscall.EACCES,
	"Forbidden":             syscall.EACCES,
	"InvalidAccessKeyId":    syscall.EACCES,
	"SignatureDoesNotMatch": syscall.EACCES,
	"ExpiredToken":          syscall.EACCES,
	"TokenRefreshRequired":  syscall.EACCES,
	"InvalidToken":          syscall.EACCES,
	"AllAccessDisabled":     syscall.EACCES,
	"AccountProblem":        syscall.EACCES,

	"RequestTimeout": syscall.ETIMEDOUT,

	"EntityTooLarge":  syscall.EFBIG,
	"KeyTooLongError": syscall.ENAMETOOLONG,

	"NoSuchBucket": syscall.EIO,
}

// isInvalidRange reports whether err says a ranged GET started at or past
// the end of the object (HTTP 416), which reads treat as end of file.
func isInvalidRange(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange" {
		return true
	}
	var respErr *awshttp.ResponseError
	return errors.As(err, &respErr) && respErr.ResponseError != nil && respErr.Response != nil &&
		respErr.Response.Response != nil && respErr.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}

// isNotFound reports whether err says the object does not exist.
func isNotFound(err error) bool {
	return err != nil && Errno(err) == syscall.ENOENT
}
