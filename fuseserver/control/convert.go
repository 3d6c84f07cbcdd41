package control

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

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

// The mapping between the protocol and package rotation, in both
// directions, for the server and for Client.

// swapToProto is the request a Client sends for req.
func swapToProto(req rotation.Request) *credentialsv1.SwapRequest {
	k := req.Keys
	return &credentialsv1.SwapRequest{AccessKeyId: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
		SessionToken: k.SessionToken, Expiration: timestamp(k.Expiration), Source: req.Source, Generation: req.Generation}
}

// outcomeFromProto is what a Client returns for a SwapResponse received at
// t for a request from source.
func outcomeFromProto(resp *credentialsv1.SwapResponse, source string, t time.Time) rotation.Outcome {
	return rotation.Outcome{Result: resultFromProto(resp.GetResult()), Reason: reasonFromProto(resp.GetReason()),
		Message: resp.GetMessage(), Generation: resp.GetGeneration(), Fingerprint: resp.GetFingerprint(), Time: t, Source: source}
}

// statusFromProto is what a Client returns for a StatusResponse.
func statusFromProto(resp *credentialsv1.StatusResponse) ServerStatus {
	return ServerStatus{PID: resp.GetPid(), Status: rotation.Status{
		Identity: rotation.Identity{VolumeID: resp.GetVolumeId(), Bucket: resp.GetBucket(), Prefix: resp.GetPrefix(),
			AuthType: resp.GetAuthType(), SecretRef: resp.GetSecretRef(), RoleARN: resp.GetRoleArn()},
		Fingerprint: resp.GetFingerprint(),
		Expiration:  timeOf(resp.GetExpiration()),
		Generation:  resp.GetGeneration(),
		Last:        lastSwapFromProto(resp.GetLastSwap()),
		LastApplied: lastSwapFromProto(resp.GetLastApplied()),
		StartedAt:   timeOf(resp.GetStartedAt()),
	}}
}

func lastSwapFromProto(ls *credentialsv1.LastSwap) rotation.Outcome {
	if ls == nil {
		return rotation.Outcome{}
	}
	return rotation.Outcome{Result: resultFromProto(ls.GetResult()), Reason: reasonFromProto(ls.GetReason()),
		Message: ls.GetMessage(), Time: timeOf(ls.GetTime()), Source: ls.GetSource()}
}

// timeOf is the time of a timestamp; the zero time for none (or an invalid
// one, which no server sends).
func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil || ts.CheckValid() != nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// protoResults and protoReasons pair every domain value with its protocol
// value; both directions of the mapping are read from them.
var (
	protoResults = map[rotation.Result]credentialsv1.SwapResult{
		rotation.ResultApplied:   credentialsv1.SwapResult_SWAP_RESULT_APPLIED,
		rotation.ResultUnchanged: credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED,
		rotation.ResultRefused:   credentialsv1.SwapResult_SWAP_RESULT_REFUSED,
		rotation.ResultStale:     credentialsv1.SwapResult_SWAP_RESULT_STALE,
	}
	protoReasons = map[rotation.Reason]credentialsv1.SwapReason{
		rotation.ReasonNone:                credentialsv1.SwapReason_SWAP_REASON_UNSPECIFIED,
		rotation.ReasonInvalidAccessKey:    credentialsv1.SwapReason_SWAP_REASON_INVALID_ACCESS_KEY,
		rotation.ReasonSignatureMismatch:   credentialsv1.SwapReason_SWAP_REASON_SIGNATURE_MISMATCH,
		rotation.ReasonAccessDenied:        credentialsv1.SwapReason_SWAP_REASON_ACCESS_DENIED,
		rotation.ReasonBucketNotFound:      credentialsv1.SwapReason_SWAP_REASON_BUCKET_NOT_FOUND,
		rotation.ReasonEndpointUnreachable: credentialsv1.SwapReason_SWAP_REASON_ENDPOINT_UNREACHABLE,
		rotation.ReasonTimeout:             credentialsv1.SwapReason_SWAP_REASON_TIMEOUT,
		rotation.ReasonExpiredToken:        credentialsv1.SwapReason_SWAP_REASON_EXPIRED_TOKEN,
		rotation.ReasonInvalidInput:        credentialsv1.SwapReason_SWAP_REASON_INVALID_INPUT,
		rotation.ReasonOther:               credentialsv1.SwapReason_SWAP_REASON_OTHER,
	}
)

// resultFromProto maps a received result; values this build does not
// know (a newer server) become 0, which callers treat as unexpected.
func resultFromProto(r credentialsv1.SwapResult) rotation.Result {
	for d, p := range protoResults {
		if p == r {
			return d
		}
	}
	return 0
}

// reasonFromProto maps a received reason; values this build does not know
// become ReasonOther.
func reasonFromProto(r credentialsv1.SwapReason) rotation.Reason {
	for d, p := range protoReasons {
		if p == r {
			return d
		}
	}
	return rotation.ReasonOther
}

func resultToProto(r rotation.Result) credentialsv1.SwapResult {
	return protoResults[r] // SWAP_RESULT_UNSPECIFIED for none
}

func reasonToProto(r rotation.Reason) credentialsv1.SwapReason {
	if p, ok := protoReasons[r]; ok {
		return p
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
