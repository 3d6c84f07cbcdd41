package rotation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
)

// ledgerApplier keeps what a custody file would: the last keys and ledger.
type ledgerApplier struct {
	keys   keys.Keys
	ledger rotation.Ledger
}

func (a *ledgerApplier) Apply(k keys.Keys, l rotation.Ledger) { a.keys, a.ledger = k, l }

// TestNoRollbackByReplay delivers every ordering of the pushes two senders
// make while a Secret goes A → B → C, with and without the server
// restarting (resuming from its saved keys and ledger) after every
// delivery, and checks that the mount never moves to keys older than the
// ones in use and ends on C.
//
// Each push carries the instant its sender observed the keys, as the
// sidecar and the node plugin do. The pushes include the replays the old
// rule let through: a republish that read A before the sidecar's newer
// push but arrives after it, a restarted sidecar re-reading a projected
// file that still holds A, and an old sender's generation 0.
func TestNoRollbackByReplay(t *testing.T) {
	order := map[string]int{"A": 0, "B": 1, "C": 2}
	base := uint64(time.Unix(1_800_000_000, 0).UnixNano())
	now := func() time.Time { return time.Unix(0, int64(base+1_000_000)) }
	type push struct {
		name string
		keys string
		gen  uint64
	}
	pushes := []push{
		{"republish read A", "A", base + 10},
		{"sidecar read B", "B", base + 20},
		{"republish read B", "B", base + 25},
		{"sidecar read C", "C", base + 30},
		{"republish read C", "C", base + 35},
		{"old sender replays A", "A", 0},
	}
	v := fakeValidator{ok: map[string]bool{"A": true, "B": true, "C": true}}
	runs := 0
	permute(len(pushes), func(perm []int) {
		for _, restart := range []bool{false, true} {
			runs++
			a := &ledgerApplier{keys: k("A")}
			m := rotation.New(rotation.Identity{VolumeID: "vol"}, k("A"), v, a, rotation.Options{Now: now})
			inUse := "A"
			var trail []string
			for _, i := range perm {
				p := pushes[i]
				out := m.Swap(context.Background(), rotation.Request{Keys: k(p.keys), Source: "t", Generation: p.gen})
				trail = append(trail, fmt.Sprintf("%s→%s", p.name, out.Result))
				if out.Result == rotation.ResultApplied {
					if order[p.keys] < order[inUse] {
						t.Fatalf("moved back from %s to %s; deliveries: %v", inUse, p.keys, trail)
					}
					inUse = p.keys
				}
				if restart {
					m = rotation.New(rotation.Identity{VolumeID: "vol"}, a.keys, v, a,
						rotation.Options{Now: now, Ledger: a.ledger})
				}
			}
			if inUse != "C" || m.Status().Fingerprint != k("C").Fingerprint() {
				t.Fatalf("ended on %s, want C; deliveries: %v", inUse, trail)
			}
		}
	})
	if runs != 2*720 {
		t.Fatalf("%d runs, want %d", runs, 2*720)
	}
}

// permute calls f with every permutation of 0..n-1 (Heap's algorithm).
func permute(n int, f func([]int)) {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	var gen func(int)
	gen = func(k int) {
		if k == 1 {
			f(p)
			return
		}
		for i := 0; i < k; i++ {
			gen(k - 1)
			if k%2 == 0 {
				p[i], p[k-1] = p[k-1], p[i]
			} else {
				p[0], p[k-1] = p[k-1], p[0]
			}
		}
	}
	gen(n)
}
