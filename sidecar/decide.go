package sidecar

import (
	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
)

// The two decisions a worker makes for its server, as pure functions. The
// server alone judges the order of keys (rotation.admit); the sidecar does
// not second-guess it from generations, it only avoids asking the same
// question twice.

// pushView is what a worker knows when it decides whether to push.
type pushView struct {
	gen        uint64 // generation of our newest keys; 0 before the source produced any
	fp         string // their fingerprint
	serverFP   string // fingerprint of the keys the server runs
	settledGen uint64 // our generation the current server process answered for good
}

// pushAction is decidePush's answer.
type pushAction int

const (
	pushNothing pushAction = iota + 1 // no keys yet, or the server already answered for these keys
	pushSynced                        // the server runs our keys
	pushNow                           // send our keys
)

// decidePush decides whether to push our keys to a server.
func decidePush(v pushView) pushAction {
	switch {
	case v.gen == 0:
		return pushNothing
	case v.serverFP == v.fp:
		return pushSynced
	case v.settledGen == v.gen:
		// Refused for good, or stale (the server runs keys newer than
		// ours, or ours are keys it replaced): pushing again changes
		// nothing until our source produces other keys or the server is
		// replaced.
		return pushNothing
	}
	return pushNow
}

// swapVerdict is judgeSwap's answer: what a Swap's answer means for the
// worker.
type swapVerdict int

const (
	swapSynced  swapVerdict = iota + 1 // the server runs our keys
	swapNewer                          // the server keeps keys newer than ours: settled, and nothing is missing
	swapRefused                        // the keys will not do: settled until our source changes
	swapRetry                          // try again with backoff (RPC failure, or S3 unreachable while validating)
	swapUnknown                        // an answer this build does not know: retry with backoff
)

// judgeSwap classifies a Swap's outcome or RPC error.
func judgeSwap(out rotation.Outcome, err error) swapVerdict {
	if err != nil {
		if control.Retryable(err) {
			return swapRetry
		}
		return swapRefused // INVALID_ARGUMENT and the like: these keys will never do
	}
	switch out.Result {
	case rotation.ResultApplied, rotation.ResultUnchanged:
		return swapSynced
	case rotation.ResultStale:
		return swapNewer
	case rotation.ResultRefused:
		if control.TransientRefusal(out.Reason) {
			return swapRetry
		}
		return swapRefused
	}
	return swapUnknown
}
