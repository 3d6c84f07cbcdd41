package control

import (
	"errors"
	"fmt"
	"strings"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// ErrInvalidArgument is wrapped by every error about a malformed request.
// Such errors name the field (as in the .proto) and never contain its value.
var ErrInvalidArgument = errors.New("control: invalid argument")

// fieldError says what is wrong with one request field.
func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, field, fmt.Sprintf(format, args...))
}

// parseSwap turns a SwapRequest into a rotation.Request, checking every
// field against the allowlist.
func parseSwap(req *credentialsv1.SwapRequest) (rotation.Request, error) {
	k := keys.Keys{
		AccessKeyID:     req.GetAccessKeyId(),
		SecretAccessKey: req.GetSecretAccessKey(),
		SessionToken:    req.GetSessionToken(),
	}
	if err := k.Validate(); err != nil {
		return rotation.Request{}, keyFieldError(k, err)
	}
	if ts := req.GetExpiration(); ts != nil {
		// CheckValid's error quotes the value; say what is wrong instead.
		if ts.CheckValid() != nil {
			return rotation.Request{}, fieldError("expiration", "not a valid timestamp (seconds must lie in years 1-9999, nanos in [0, 1e9))")
		}
		k.Expiration = ts.AsTime()
	}
	source, err := parseSource(req.GetSource())
	if err != nil {
		return rotation.Request{}, err
	}
	return rotation.Request{Keys: k, Source: source, Generation: req.GetGeneration()}, nil
}

// keyFieldError attributes a keys.Validate error to the request field that
// caused it, by validating each field on its own with harmless stand-ins
// for the others. keys.Validate stays the one authority on key syntax, and
// its errors never contain values.
func keyFieldError(k keys.Keys, err error) error {
	const ok = "x"
	for _, f := range []struct {
		name string
		k    keys.Keys
	}{
		{"access_key_id", keys.Keys{AccessKeyID: k.AccessKeyID, SecretAccessKey: ok}},
		{"secret_access_key", keys.Keys{AccessKeyID: ok, SecretAccessKey: k.SecretAccessKey}},
		{"session_token", keys.Keys{AccessKeyID: ok, SecretAccessKey: ok, SessionToken: k.SessionToken}},
	} {
		if ferr := f.k.Validate(); ferr != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidArgument, f.name, ferr)
		}
	}
	return fmt.Errorf("%w: keys: %w", ErrInvalidArgument, err)
}

// parseSource checks a source name: 1 to rotation.MaxSourceLen characters
// from [A-Za-z0-9._-].
func parseSource(s string) (string, error) {
	if s == "" {
		return "", fieldError("source", "is empty")
	}
	if len(s) > rotation.MaxSourceLen {
		return "", fieldError("source", "is %d bytes, at most %d allowed", len(s), rotation.MaxSourceLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return "", fieldError("source", "character at position %d is outside [A-Za-z0-9._-]", i)
		}
	}
	return s, nil
}

// parseReport checks a ReportRequest for the volume volumeID and returns
// its source and cleaned reason.
func parseReport(req *credentialsv1.ReportRequest, volumeID string) (source, reason string, err error) {
	switch req.GetVolumeId() {
	case "":
		return "", "", fieldError("volume_id", "is empty")
	case volumeID:
	default:
		// The server's own volume ID is public (Status returns it); the
		// caller's value is not echoed.
		return "", "", fieldError("volume_id", "does not match this server's volume %q", volumeID)
	}
	if source, err = parseSource(req.GetSource()); err != nil {
		return "", "", err
	}
	raw := req.GetReason()
	reason = rotation.Clean(raw, len(raw))
	switch {
	case reason == "":
		return "", "", fieldError("reason", "is empty")
	case len(reason) > rotation.MaxReasonLen:
		return "", "", fieldError("reason", "is %d bytes after cleaning, at most %d allowed", len(reason), rotation.MaxReasonLen)
	}
	return source, reason, nil
}

// scrub removes the request's secrets from text that goes back to the
// client. Validators promise never to put keys into messages; this is the
// second line of defence should one break that promise.
func scrub(s string, req *credentialsv1.SwapRequest) string {
	for _, secret := range []string{req.GetSecretAccessKey(), req.GetSessionToken()} {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, redactedValue)
		}
	}
	return s
}

func resultToProto(r rotation.Result) credentialsv1.SwapResult {
	switch r {
	case rotation.ResultApplied:
		return credentialsv1.SwapResult_SWAP_RESULT_APPLIED
	case rotation.ResultUnchanged:
		return credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED
	case rotation.ResultRefused:
		return credentialsv1.SwapResult_SWAP_RESULT_REFUSED
	case rotation.ResultStale:
		return credentialsv1.SwapResult_SWAP_RESULT_STALE
	}
	return credentialsv1.SwapResult_SWAP_RESULT_UNSPECIFIED
}

func reasonToProto(r rotation.Reason) credentialsv1.SwapReason {
	switch r {
	case rotation.ReasonNone:
		return credentialsv1.SwapReason_SWAP_REASON_UNSPECIFIED
	case rotation.ReasonInvalidAccessKey:
		return credentialsv1.SwapReason_SWAP_REASON_INVALID_ACCESS_KEY
	case rotation.ReasonSignatureMismatch:
		return credentialsv1.SwapReason_SWAP_REASON_SIGNATURE_MISMATCH
	case rotation.ReasonAccessDenied:
		return credentialsv1.SwapReason_SWAP_REASON_ACCESS_DENIED
	case rotation.ReasonBucketNotFound:
		return credentialsv1.SwapReason_SWAP_REASON_BUCKET_NOT_FOUND
	case rotation.ReasonEndpointUnreachable:
		return credentialsv1.SwapReason_SWAP_REASON_ENDPOINT_UNREACHABLE
	case rotation.ReasonTimeout:
		return credentialsv1.SwapReason_SWAP_REASON_TIMEOUT
	case rotation.ReasonExpiredToken:
		return credentialsv1.SwapReason_SWAP_REASON_EXPIRED_TOKEN
	case rotation.ReasonInvalidInput:
		return credentialsv1.SwapReason_SWAP_REASON_INVALID_INPUT
	}
	return credentialsv1.SwapReason_SWAP_REASON_OTHER
}

func eventToProto(ev rotation.Event) *credentialsv1.Event {
	kind := credentialsv1.EventKind_EVENT_KIND_UNSPECIFIED
	switch ev.Kind {
	case rotation.EventApplied:
		kind = credentialsv1.EventKind_EVENT_KIND_APPLIED
	case rotation.EventRefused:
		kind = credentialsv1.EventKind_EVENT_KIND_REFUSED
	case rotation.EventReported:
		kind = credentialsv1.EventKind_EVENT_KIND_REPORTED
	case rotation.EventStagedDataRetained:
		kind = credentialsv1.EventKind_EVENT_KIND_STAGED_DATA_RETAINED
	}
	return &credentialsv1.Event{Sequence: ev.Sequence, Kind: kind, VolumeId: ev.VolumeID, Reason: ev.Reason,
		Generation: ev.Generation, Fingerprint: ev.Fingerprint, Source: ev.Source, Time: timestamp(ev.Time),
		ObjectKeys: ev.Keys}
}
