package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
)

// fakeValidator accepts the access key IDs in ok and refuses others.
type fakeValidator struct{ ok map[string]bool }

func (v fakeValidator) Validate(_ context.Context, k keys.Keys) error {
	if v.ok[k.AccessKeyID] {
		return nil
	}
	return &rotation.RefusalError{Reason: rotation.ReasonInvalidAccessKey, Message: "invalid credentials (host=h:443, code=InvalidAccessKeyId)"}
}

type recordingApplier struct {
	applied []string
	gens    []uint64
}

func (a *recordingApplier) Apply(k keys.Keys, l rotation.Ledger) {
	a.applied = append(a.applied, k.AccessKeyID)
	a.gens = append(a.gens, l.Generation)
}

func k(id string) keys.Keys { return keys.Keys{AccessKeyID: id, SecretAccessKey: "secret-" + id} }

func newManager() (*rotation.Manager, *recordingApplier) {
	a := &recordingApplier{}
	v := fakeValidator{ok: map[string]bool{"A": true, "B": true, "C": true}}
	// The clock stands just after the epoch, so the small generations of
	// these tests are not ahead of it and generation 0 becomes "previous + 1".
	clock := func() time.Time { return time.Unix(0, 1) }
	return rotation.New(rotation.Identity{VolumeID: "vol"}, k("A"), v, a, rotation.Options{Now: clock}), a
}

func TestSwapSequence(t *testing.T) {
	m, a := newManager()
	ctx := context.Background()
	steps := []struct {
		name       string
		req        rotation.Request
		wantResult rotation.Result
		wantReason rotation.Reason
		wantGen    uint64
		wantFP     string
	}{
		{"identical keys are a no-op", rotation.Request{Keys: k("A")}, rotation.ResultUnchanged, rotation.ReasonNone, 0, k("A").Fingerprint()},
		{"valid keys apply", rotation.Request{Keys: k("B"), Generation: 5}, rotation.ResultApplied, rotation.ReasonNone, 5, k("B").Fingerprint()},
		{"stale generation refused", rotation.Request{Keys: k("C"), Generation: 4}, rotation.ResultStale, rotation.ReasonNone, 5, k("B").Fingerprint()},
		{"equal generation with other keys is stale", rotation.Request{Keys: k("C"), Generation: 5}, rotation.ResultStale, rotation.ReasonNone, 5, k("B").Fingerprint()},
		{"invalid keys refused, old kept", rotation.Request{Keys: k("X"), Generation: 6}, rotation.ResultRefused, rotation.ReasonInvalidAccessKey, 5, k("B").Fingerprint()},
		{"malformed keys refused", rotation.Request{Keys: keys.Keys{AccessKeyID: "A B", SecretAccessKey: "s"}, Generation: 6}, rotation.ResultRefused, rotation.ReasonInvalidInput, 5, k("B").Fingerprint()},
		{"expired keys refused", rotation.Request{Keys: keys.Keys{AccessKeyID: "C", SecretAccessKey: "s", Expiration: time.Unix(0, 0)}, Generation: 6}, rotation.ResultRefused, rotation.ReasonExpiredToken, 5, k("B").Fingerprint()},
		{"keys the mount replaced are stale whatever the generation", rotation.Request{Keys: k("A"), Generation: 9}, rotation.ResultStale, rotation.ReasonNone, 5, k("B").Fingerprint()},
		{"generation 0 (older senders) takes the next one", rotation.Request{Keys: k("C")}, rotation.ResultApplied, rotation.ReasonNone, 6, k("C").Fingerprint()},
	}
	for _, s := range steps {
		out := m.Swap(ctx, s.req)
		if out.Result != s.wantResult || out.Reason != s.wantReason || out.Generation != s.wantGen || out.Fingerprint != s.wantFP {
			t.Fatalf("%s: got %v/%v gen %d fp %s (%s), want %v/%v gen %d fp %s",
				s.name, out.Result, out.Reason, out.Generation, out.Fingerprint, out.Message, s.wantResult, s.wantReason, s.wantGen, s.wantFP)
		}
	}
	if got := strings.Join(a.applied, ","); got != "B,C" {
		t.Errorf("applied %s, want B,C", got)
	}
	st := m.Status()
	if st.Generation != 6 || st.Fingerprint != k("C").Fingerprint() || st.Last.Result != rotation.ResultApplied || st.VolumeID != "vol" {
		t.Errorf("status = %+v", st)
	}
}

func TestEvents(t *testing.T) {
	m, _ := newManager()
	ctx := context.Background()
	m.Swap(ctx, rotation.Request{Keys: k("B"), Source: "secret"})
	m.Swap(ctx, rotation.Request{Keys: k("X"), Source: "secret"})
	m.Swap(ctx, rotation.Request{Keys: k("B")}) // unchanged: no event
	if err := m.Report("rrsa", "sts refused\x00 the token\n"); err != nil {
		t.Fatal(err)
	}
	if err := m.Report("rrsa", " \n"); !errors.Is(err, rotation.ErrInvalidReport) {
		t.Fatalf("empty report: %v", err)
	}
	var got []string
	for len(m.Events()) > 0 {
		ev := <-m.Events()
		got = append(got, ev.Kind.String()+":"+ev.Reason)
		if ev.VolumeID != "vol" {
			t.Errorf("event volume %q", ev.VolumeID)
		}
	}
	want := []string{"applied:", "refused:invalid credentials (host=h:443, code=InvalidAccessKeyId)", "reported:sts refused  the token"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

func TestEventsDropOldestWhenFull(t *testing.T) {
	m := rotation.New(rotation.Identity{VolumeID: "v"}, k("A"), fakeValidator{}, &recordingApplier{}, rotation.Options{EventBuffer: 2})
	for _, r := range []string{"one", "two", "three"} {
		if err := m.Report("s", r); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := <-m.Events(), <-m.Events(); a.Reason != "two" || b.Reason != "three" {
		t.Errorf("kept %q, %q; want two, three", a.Reason, b.Reason)
	}
}

func TestEventsAfter(t *testing.T) {
	m := rotation.New(rotation.Identity{VolumeID: "v"}, k("A"), fakeValidator{}, &recordingApplier{}, rotation.Options{EventLog: 3})
	evs, next := m.EventsAfter(0)
	if len(evs) != 0 {
		t.Fatalf("events before any: %v", evs)
	}
	if err := m.Report("s", "one"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-next:
	default:
		t.Fatal("the channel was not closed by a new event")
	}
	for _, r := range []string{"two", "three", "four"} {
		if err := m.Report("s", r); err != nil {
			t.Fatal(err)
		}
	}
	reasons := func(evs []rotation.Event) (out []string) {
		for _, ev := range evs {
			out = append(out, fmt.Sprintf("%d:%s", ev.Sequence, ev.Reason))
		}
		return out
	}
	for _, tc := range []struct {
		after uint64
		want  string
	}{
		{0, "2:two 3:three 4:four"}, // one fell out of the log
		{2, "3:three 4:four"},
		{4, ""},
		{9, "2:two 3:three 4:four"}, // unknown sequence: an earlier process
	} {
		evs, next := m.EventsAfter(tc.after)
		if got := strings.Join(reasons(evs), " "); got != tc.want {
			t.Errorf("EventsAfter(%d) = %q, want %q", tc.after, got, tc.want)
		}
		select {
		case <-next:
			t.Errorf("EventsAfter(%d): channel closed without a new event", tc.after)
		default:
		}
	}
}

func TestClean(t *testing.T) {
	if got := rotation.Clean("héllo\tworld", 5); got != "héll" {
		t.Errorf("Clean = %q", got)
	}
}
