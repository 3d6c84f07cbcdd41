package main

import (
	"strings"
	"testing"

	"rekey.dev/rekey/csidriver/supervisor"
)

// TestParseDiskFlags: the staging disk flags default to the documented
// values and refuse values out of range with the flag's name.
func TestParseDiskFlags(t *testing.T) {
	cfg, err := parse([]string{"supervisor"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (supervisor.StagingReserve{MiB: 1024, Percent: 12}); cfg.stagingReserve != want || cfg.maxWriteCacheMiB != 256 || cfg.maxStagingMiB != 4096 {
		t.Errorf("defaults: reserve %+v, caps %d/%d; want %+v, 256/4096", cfg.stagingReserve, cfg.maxWriteCacheMiB, cfg.maxStagingMiB, want)
	}
	for _, c := range []struct{ args, want string }{
		{"--staging-reserve-percent=95", "--staging-reserve-percent"},
		{"--staging-reserve-mib=-1", "--staging-reserve-mib"},
		{"--max-staging-mb=10", "--max-staging-mb=10"},
		{"--max-write-cache-mb=-1", "--max-write-cache-mb=-1"},
	} {
		if _, err := parse([]string{"driver", c.args}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parse %s: %v, want an error naming %s", c.args, err, c.want)
		}
	}
	if _, err := parse([]string{"driver", "--max-staging-mb=0", "--max-write-cache-mb=0", "--staging-reserve-percent=0", "--staging-reserve-mib=0"}); err != nil {
		t.Errorf("zeros (no caps, no reserve): %v", err)
	}
}
