package csidriver

import (
	"context"
	"sync"

	"github.com/go-logr/logr"

	"rekey.dev/rekey/csidriver/supervisor"
)

// vault holds the driver's copies of every mount's descriptors (the
// /dev/fuse connection and the key custody file). The supervisor holds
// copies too; with two holders in two containers, the death of either
// container, or of a FUSE server, never closes a connection, and whoever
// restarts gets the descriptors back from the other (sync).
type vault struct {
	mu  sync.Mutex
	fds map[string]supervisor.Descriptors // by mount ID
}

func newVault() *vault { return &vault{fds: map[string]supervisor.Descriptors{}} }

// put keeps fds for mount id (the vault owns them now).
func (v *vault) put(id string, fds supervisor.Descriptors) {
	v.mu.Lock()
	old, ok := v.fds[id]
	v.fds[id] = fds
	v.mu.Unlock()
	if ok {
		old.Close()
	}
}

// drop closes and forgets the descriptors of mount id.
func (v *vault) drop(id string) {
	v.mu.Lock()
	fds, ok := v.fds[id]
	delete(v.fds, id)
	v.mu.Unlock()
	if ok {
		fds.Close()
	}
}

func (v *vault) get(id string) (supervisor.Descriptors, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fds, ok := v.fds[id]
	return fds, ok
}

// custodian is what sync needs of the Runner.
type custodian interface {
	List(ctx context.Context) ([]supervisor.Info, error)
	Attach(ctx context.Context, id string, fds supervisor.Descriptors) error
	Descriptors(ctx context.Context, id string) (supervisor.Descriptors, error)
}

// sync runs whenever the driver (re)connects to the supervisor: the
// supervisor gets copies of the descriptors it lacks (it restarted; a
// mount whose server died meanwhile is resumed on them), and the driver
// takes copies of those it lacks (it restarted).
func (v *vault) sync(ctx context.Context, r custodian, log logr.Logger) {
	infos, err := r.List(ctx)
	if err != nil {
		log.V(1).Info("descriptor sync: supervisor not reachable", "error", err.Error())
		return
	}
	for _, in := range infos {
		if fds, ok := v.get(in.ID); ok {
			if err := r.Attach(ctx, in.ID, fds); err != nil {
				log.Error(err, "descriptor sync: attach failed", "mountId", in.ID)
			}
			continue
		}
		fds, err := r.Descriptors(ctx, in.ID)
		if err != nil {
			log.Info("descriptor sync: the supervisor holds no descriptors of this mount; only it keeps the connection alive",
				"mountId", in.ID, "why", err.Error())
			continue
		}
		v.put(in.ID, fds)
		log.V(1).Info("descriptor sync: took copies of the mount's descriptors", "mountId", in.ID)
	}
}
