package fuseserver

import (
	"sync"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/fuseserver/s3fs"
)

// retainedEvents turns what the filesystem reports as kept on the node
// (s3fs.Options.OnRetained) into EventStagedDataRetained events, one per
// distinct reason. Recovery reports before the rotation manager exists, so
// reports wait for attach.
type retainedEvents struct {
	mu      sync.Mutex
	mgr     *rotation.Manager
	waiting [][]s3fs.Retained
}

// add is the s3fs.Options.OnRetained callback.
func (r *retainedEvents) add(rs []s3fs.Retained) {
	r.mu.Lock()
	mgr := r.mgr
	if mgr == nil {
		r.waiting = append(r.waiting, rs)
	}
	r.mu.Unlock()
	if mgr != nil {
		emitRetained(mgr, rs)
	}
}

// attach emits what waited and everything reported from now on on mgr.
func (r *retainedEvents) attach(mgr *rotation.Manager) {
	r.mu.Lock()
	waiting := r.waiting
	r.waiting, r.mgr = nil, mgr
	r.mu.Unlock()
	for _, rs := range waiting {
		emitRetained(mgr, rs)
	}
}

func emitRetained(mgr *rotation.Manager, rs []s3fs.Retained) {
	var reasons []string
	byReason := map[string][]string{}
	for _, r := range rs {
		if _, ok := byReason[r.Reason]; !ok {
			reasons = append(reasons, r.Reason)
		}
		byReason[r.Reason] = append(byReason[r.Reason], r.Key)
	}
	for _, reason := range reasons {
		mgr.StagedDataRetained(byReason[reason], reason)
	}
}
