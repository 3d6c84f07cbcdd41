package rotation

import (
	"fmt"
	"slices"
	"time"
)

// MaxGenerationAhead bounds how far a generation may be ahead of the
// server's clock.
//
// Generations are instants on the node's clock, in nanoseconds since the
// Unix epoch, at which a sender learned the keys it pushes: the sidecar
// uses the time kubelet wrote the projected Secret (or the time it obtained
// temporary keys from STS), the node plugin the time a republish reached
// it. Every sender of a mount runs on the mount's node, so all of them read
// the same clock and their generations order their observations.
//
// A generation further ahead than this is refused: nobody on the node can
// have observed keys in the future, and accepting one would let a single
// bad request freeze the mount on its keys (every later push would be
// stale) or, near 2^64, wrap. With the bound, generations stay below the
// year 2554.
const MaxGenerationAhead = 10 * time.Minute

// MaxReplaced is how many fingerprints of replaced keys a Ledger keeps.
// A mount that rotated more often than this may in principle be offered
// the oldest forgotten keys again; generations still order such a push.
const MaxReplaced = 64

// Ledger is what a mount remembers about its key history, beyond the keys
// in use: their generation and the fingerprints of the keys they replaced.
// It is saved with the keys (package keycustody), so a server that resumes
// the mount refuses the same replays as the one before it.
type Ledger struct {
	// Generation is the generation of the keys in use; 0 for the keys a
	// mount started with (before the first applied swap).
	Generation uint64
	// Replaced are the fingerprints of keys this mount used and then
	// replaced, oldest first, at most MaxReplaced.
	Replaced []string
}

// replaced reports whether keys with fingerprint fp were in use and then
// replaced.
func (l Ledger) replaced(fp string) bool { return slices.Contains(l.Replaced, fp) }

// after returns the ledger once keys with generation gen replaced the keys
// with fingerprint old.
func (l Ledger) after(old string, gen uint64) Ledger {
	r := slices.DeleteFunc(slices.Clone(l.Replaced), func(s string) bool { return s == old })
	r = append(r, old)
	if len(r) > MaxReplaced {
		r = r[len(r)-MaxReplaced:]
	}
	return Ledger{Generation: gen, Replaced: r}
}

// verdict is what admit decides about a swap before any key is validated.
type verdict int

const (
	verdictValidate  verdict = iota + 1 // new keys of a newer generation: validate, then apply
	verdictUnchanged                    // the keys in use
	verdictStale                        // the generation is not newer than the keys in use
	verdictReplaced                     // keys this mount already replaced
	verdictAhead                        // the generation is ahead of the node's clock
)

// admission is admit's answer: the verdict, the generation the keys get if
// they are applied, and a message for refusals and stale pushes.
type admission struct {
	verdict verdict
	gen     uint64
	message string
}

// admit decides what to do with a swap of keys with fingerprint fp and
// generation gen, while the keys in use have fingerprint current and the
// ledger l, at time now. It is the whole ordering policy:
//
//   - A generation ahead of now by more than MaxGenerationAhead is refused.
//   - The keys in use are a no-op whatever the generation; the generation
//     in use does not move, so a sender re-confirming old keys cannot make
//     another sender's newer keys look stale.
//   - Keys this mount replaced are never taken again, whatever the
//     generation: no replay (a republish that read the Secret before the
//     sidecar's newer push, a restarted sender, a resumed server) can move
//     the mount back.
//   - Otherwise a generation not above the one in use is stale.
//   - Generation 0 (senders older than this rule) gets the next generation
//     on the node's clock; the replay rule still applies to it.
func admit(current, fp string, gen uint64, l Ledger, now time.Time) admission {
	clock := uint64(max(now.UnixNano(), 0))
	switch {
	case gen > clock+uint64(MaxGenerationAhead):
		return admission{verdict: verdictAhead, gen: l.Generation,
			message: fmt.Sprintf("generation is more than %s ahead of this node's clock", MaxGenerationAhead)}
	case fp == current:
		return admission{verdict: verdictUnchanged, gen: l.Generation, message: "keys already in use"}
	case l.replaced(fp):
		return admission{verdict: verdictReplaced, gen: l.Generation,
			message: "these keys were in use before and were replaced; a mount never goes back to replaced keys"}
	case gen != 0 && gen <= l.Generation:
		return admission{verdict: verdictStale, gen: l.Generation,
			message: fmt.Sprintf("stale generation %d, current is %d", gen, l.Generation)}
	case gen == 0:
		return admission{verdict: verdictValidate, gen: max(clock, l.Generation+1)}
	}
	return admission{verdict: verdictValidate, gen: gen}
}
