package fuseserver

import (
	"slices"
	"testing"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/fuseserver/s3fs"
	"rekey.dev/rekey/internal/keys"
)

// TestRetainedEvents: what recovery reports before the rotation manager
// exists is emitted once it is attached, one event per reason, with the
// object keys; later reports go out at once.
func TestRetainedEvents(t *testing.T) {
	var r retainedEvents
	r.add([]s3fs.Retained{
		{Key: "a.txt", StagingFile: "/s/stage-1", Reason: "conflict"},
		{Key: "stage-9 (no record)", StagingFile: "/s/stage-9", Reason: "no record"},
		{Key: "b/c.bin", StagingFile: "/s/stage-2", Reason: "conflict"},
	})
	mgr := rotation.New(rotation.Identity{VolumeID: "vol"}, keys.Keys{AccessKeyID: "AK", SecretAccessKey: "secret"}, nil, nil, rotation.Options{})
	r.attach(mgr)
	r.add([]s3fs.Retained{{Key: "late.bin", Reason: "upload gone"}})
	evs, _ := mgr.EventsAfter(0)
	type got struct {
		reason string
		keys   []string
	}
	var gots []got
	for _, ev := range evs {
		if ev.Kind != rotation.EventStagedDataRetained || ev.VolumeID != "vol" || ev.Kind.String() != "retained" {
			t.Fatalf("event %+v", ev)
		}
		gots = append(gots, got{ev.Reason, ev.Keys})
	}
	want := []got{{"conflict", []string{"a.txt", "b/c.bin"}}, {"no record", []string{"stage-9 (no record)"}}, {"upload gone", []string{"late.bin"}}}
	if !slices.EqualFunc(gots, want, func(a, b got) bool { return a.reason == b.reason && slices.Equal(a.keys, b.keys) }) {
		t.Fatalf("events %+v, want %+v", gots, want)
	}
}
