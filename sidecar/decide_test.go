package sidecar

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/fuseserver/rotation"
)

func TestDecidePush(t *testing.T) {
	cases := []struct {
		name string
		v    pushView
		want pushAction
	}{
		{"no keys yet", pushView{gen: 0, fp: "", serverFP: "A"}, pushNothing},
		{"server runs our keys", pushView{gen: 5, fp: "B", serverFP: "B"}, pushSynced},
		{"server runs our keys, though it once answered stale for them", pushView{gen: 5, fp: "B", serverFP: "B", settledGen: 5}, pushSynced},
		{"server runs other keys", pushView{gen: 5, fp: "B", serverFP: "A"}, pushNow},
		// The old rule skipped this push when the server's generation was
		// higher; a republish re-confirming old keys raised it, and the
		// sidecar's newer keys never went out.
		{"server runs other keys of a higher generation", pushView{gen: 5, fp: "B", serverFP: "A"}, pushNow},
		{"this server answered for these keys for good", pushView{gen: 5, fp: "B", serverFP: "A", settledGen: 5}, pushNothing},
		{"it answered for older keys of ours", pushView{gen: 6, fp: "C", serverFP: "A", settledGen: 5}, pushNow},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := decidePush(c.v); got != c.want {
				t.Errorf("decidePush(%+v) = %d, want %d", c.v, got, c.want)
			}
		})
	}
}

func TestJudgeSwap(t *testing.T) {
	out := func(r rotation.Result, reason rotation.Reason) rotation.Outcome {
		return rotation.Outcome{Result: r, Reason: reason}
	}
	wrap := func(c codes.Code) error { return fmt.Errorf("control: swap: %w", status.Error(c, "x")) }
	cases := []struct {
		name string
		out  rotation.Outcome
		err  error
		want swapVerdict
	}{
		{"applied", out(rotation.ResultApplied, rotation.ReasonNone), nil, swapSynced},
		{"unchanged", out(rotation.ResultUnchanged, rotation.ReasonNone), nil, swapSynced},
		{"stale: the server keeps newer keys", out(rotation.ResultStale, rotation.ReasonNone), nil, swapNewer},
		{"refused: invalid key", out(rotation.ResultRefused, rotation.ReasonInvalidAccessKey), nil, swapRefused},
		{"refused: access denied", out(rotation.ResultRefused, rotation.ReasonAccessDenied), nil, swapRefused},
		{"refused: generation ahead of the clock", out(rotation.ResultRefused, rotation.ReasonInvalidInput), nil, swapRefused},
		{"refused: S3 unreachable (5xx, SlowDown, network)", out(rotation.ResultRefused, rotation.ReasonEndpointUnreachable), nil, swapRetry},
		{"refused: S3 timeout", out(rotation.ResultRefused, rotation.ReasonTimeout), nil, swapRetry},
		{"server not there", rotation.Outcome{}, wrap(codes.Unavailable), swapRetry},
		{"deadline", rotation.Outcome{}, wrap(codes.DeadlineExceeded), swapRetry},
		{"malformed request", rotation.Outcome{}, wrap(codes.InvalidArgument), swapRefused},
		{"peer not allowed", rotation.Outcome{}, wrap(codes.PermissionDenied), swapRefused},
		{"a result this build does not know", rotation.Outcome{Result: 0}, nil, swapUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := judgeSwap(c.out, c.err); got != c.want {
				t.Errorf("judgeSwap = %d, want %d", got, c.want)
			}
		})
	}
}
