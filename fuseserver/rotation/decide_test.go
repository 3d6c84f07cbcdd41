package rotation

import (
	"math"
	"testing"
	"time"
)

func TestAdmit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := uint64(now.UnixNano())
	ahead := uint64(MaxGenerationAhead)
	l := Ledger{Generation: clock - 100, Replaced: []string{"old1", "old2"}}
	cases := []struct {
		name    string
		fp      string
		gen     uint64
		want    verdict
		wantGen uint64
	}{
		{"new keys, newer generation", "new", clock - 50, verdictValidate, clock - 50},
		{"new keys, generation of the keys in use", "new", clock - 100, verdictStale, clock - 100},
		{"new keys, older generation", "new", clock - 200, verdictStale, clock - 100},
		{"keys in use, newer generation: the generation does not move", "cur", clock - 10, verdictUnchanged, clock - 100},
		{"keys in use, older generation", "cur", 1, verdictUnchanged, clock - 100},
		{"replaced keys, newer generation (replay)", "old1", clock, verdictReplaced, clock - 100},
		{"replaced keys, generation 0 (replay by an old sender)", "old2", 0, verdictReplaced, clock - 100},
		{"new keys, generation 0: the node's clock", "new", 0, verdictValidate, clock},
		{"new keys, as far ahead as allowed", "new", clock + ahead, verdictValidate, clock + ahead},
		{"new keys, further ahead than allowed", "new", clock + ahead + 1, verdictAhead, clock - 100},
		{"the largest generation", "new", math.MaxUint64, verdictAhead, clock - 100},
		{"keys in use, the largest generation", "cur", math.MaxUint64, verdictAhead, clock - 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := admit("cur", c.fp, c.gen, l, now)
			if got.verdict != c.want || got.gen != c.wantGen {
				t.Errorf("admit = verdict %d gen %d (%s), want verdict %d gen %d", got.verdict, got.gen, got.message, c.want, c.wantGen)
			}
		})
	}
}

func TestAdmitGenerationZeroAfterAClockStep(t *testing.T) {
	// The clock stepped back below the generation in use: generation 0
	// still gets a newer generation.
	l := Ledger{Generation: 5_000}
	got := admit("cur", "new", 0, l, time.Unix(0, 1_000))
	if got.verdict != verdictValidate || got.gen != 5_001 {
		t.Errorf("admit = %+v, want validate with generation 5001", got)
	}
}

func TestLedgerAfter(t *testing.T) {
	var l Ledger
	for i := 0; i < MaxReplaced+10; i++ {
		l = l.after(string(rune('A'+i%60))+string(rune('a'+i/60)), uint64(i+1))
	}
	if len(l.Replaced) != MaxReplaced || l.Generation != MaxReplaced+10 {
		t.Fatalf("ledger has %d replaced, generation %d; want %d and %d", len(l.Replaced), l.Generation, MaxReplaced, MaxReplaced+10)
	}
	// Replacing keys that are already listed moves them to the end
	// instead of listing them twice.
	first := l.Replaced[0]
	l2 := l.after(first, 1000)
	if len(l2.Replaced) != MaxReplaced || l2.Replaced[MaxReplaced-1] != first || l2.Replaced[0] == first {
		t.Errorf("re-replacing %q gave %v", first, l2.Replaced)
	}
	if l.Replaced[0] != first {
		t.Error("after modified the ledger it was called on")
	}
}
