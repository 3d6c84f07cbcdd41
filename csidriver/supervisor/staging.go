package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"rekey.dev/rekey/fuseserver/journal"
	"rekey.dev/rekey/fuseserver/s3fs"
)

// EventStagedDataRetained is the kind of the Event that says data an application wrote is kept in the
// mount's staging directory on the node because it was not uploaded (sent
// by a FUSE server, or by the supervisor when a mount's server is gone).
// Keys names the objects.
const EventStagedDataRetained = "retained"

// StagingReserve is free space on the node's staging filesystem (the
// state directory's) that the FUSE servers leave alone: a write that would
// take the free space below max(MiB, Percent of the filesystem) fails with
// ENOSPC (s3fs, space.go). The filesystem is the kubelet's (nodefs): with
// a reserve above kubelet's eviction threshold for nodefs.available,
// staging alone never puts the node under DiskPressure, however many
// mounts it has, and evicting pods for it, which would free none of it,
// does not happen.
type StagingReserve struct {
	MiB     int
	Percent int
}

// Defaults of the node plugin (rekey-csi supervisor --staging-reserve-*):
// 2 points above kubelet's default hard eviction threshold
// (nodefs.available<10%), and 1 GiB on small disks.
const (
	DefaultStagingReserveMiB     = 1024
	DefaultStagingReservePercent = 12
	MaxStagingReservePercent     = 90
)

// Validate checks the reserve's ranges.
func (r StagingReserve) Validate() error {
	if r.MiB < 0 || r.Percent < 0 || r.Percent > MaxStagingReservePercent {
		return fmt.Errorf("staging reserve %d MiB, %d%%: want at least 0 MiB and 0 to %d%%", r.MiB, r.Percent, MaxStagingReservePercent)
	}
	return nil
}

// args are the rekey-fuse flags of the reserve.
func (r StagingReserve) args() []string {
	var out []string
	if r.MiB > 0 {
		out = append(out, "--staging-reserve-mib="+strconv.Itoa(r.MiB))
	}
	if r.Percent > 0 {
		out = append(out, "--staging-reserve-percent="+strconv.Itoa(r.Percent))
	}
	return out
}

// pruneStaging removes from the staging directory of mount id what its
// journal says is uploaded (journal.Prune), and keeps, logs and reports
// everything else: dirty data, staging files without a record (rekey 0.1),
// records this build cannot read. The next server for the same target
// path (same mount ID, same staging directory: kubelet republishes after a
// node reboot) uploads what it can. spec may be zero (no pod to tell).
// Called with stateMu held.
func (s *Supervisor) pruneStaging(id string, spec Spec) {
	dir := s.statePath(id, ".staging")
	if err := s3fs.RemoveNodeTable(dir); err != nil {
		s.cfg.Log.Error(err, "node table not removed", "mountId", id)
	}
	kept, err := journal.Prune(dir)
	if err != nil {
		s.cfg.Log.Error(err, "staging directory not fully cleaned", "mountId", id, "stagingDir", dir)
	}
	if len(kept) == 0 {
		return
	}
	keys := make([]string, 0, len(kept))
	for _, e := range kept {
		keys = append(keys, e.Describe())
	}
	s.cfg.Log.Info("staged data that was not uploaded is kept on the node; the next server of this mount uploads it",
		"mountId", id, "volumeId", spec.VolumeID, "stagingDir", dir, "keys", keys)
	s.publish(Event{Kind: EventStagedDataRetained, MountID: id, Spec: spec, Keys: keys, Time: time.Now(),
		Reason: fmt.Sprintf("its FUSE server stopped before uploading it; it is kept in %s on the node", dir)}, nil)
}

// stateSpec returns the Spec recorded for mount id, or a zero Spec.
func (s *Supervisor) stateSpec(id string) Spec {
	b, err := os.ReadFile(s.statePath(id, ".json"))
	if err != nil {
		return Spec{}
	}
	var st state
	if json.Unmarshal(b, &st) != nil {
		return Spec{}
	}
	return st.Info.Spec
}

// reportOrphanStaging logs the staging directories that hold data of a
// mount without a state file (its server stopped before the data could be
// uploaded, and no server runs for it now). They stay until a server for
// the same target path uploads them, or an operator does (docs/fuse-server.md).
func (s *Supervisor) reportOrphanStaging() {
	dirs, err := filepath.Glob(filepath.Join(s.cfg.StateDir, "*.staging"))
	if err != nil {
		return
	}
	for _, dir := range dirs {
		id := strings.TrimSuffix(filepath.Base(dir), ".staging")
		if _, err := os.Stat(s.statePath(id, ".json")); err == nil {
			continue // a mount this supervisor knows
		}
		entries, _, err := journal.Scan(dir)
		if err != nil {
			continue
		}
		var keys []string
		for _, e := range entries {
			if !e.Removable() {
				keys = append(keys, e.Describe())
			}
		}
		if len(keys) > 0 {
			s.cfg.Log.Info("staged data of a mount without a server is kept on the node; a server for its target path uploads it",
				"mountId", id, "stagingDir", dir, "keys", keys)
		}
	}
}
