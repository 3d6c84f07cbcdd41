package session

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

var update = flag.Bool("update", false, "rewrite testdata/v1.json")

// sample is what a Linux 6.18 kernel and rekey-fuse negotiate (values as
// seen on this project's machines).
func sample() State {
	var st State
	st.Init.Kernel = fuse.InitIn{Major: 7, Minor: 44, MaxReadAhead: 131072, Flags: 0x73fffffb, Flags2: 0x1b6}
	st.Init.Reply = fuse.InitOut{Major: 7, Minor: 44, MaxReadAhead: 131072, Flags: 0x40211, Flags2: 0,
		MaxBackground: 64, CongestionThreshold: 48, MaxWrite: 1 << 20, TimeGran: 1, MaxPages: 256}
	st.Epoch = 3
	return st
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json")
	if err := Write(path, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != sample() {
		t.Fatalf("got %+v, want %+v", got, sample())
	}
	if !got.Init.SupportsResend() {
		t.Error("CAP_HAS_RESEND lost")
	}
}

// TestFormatV1Fixture reads a session file of format version 1 as an older
// rekey-fuse wrote it: a newer build must resume connections it left.
func TestFormatV1Fixture(t *testing.T) {
	path := filepath.Join("testdata", "v1.json")
	if *update {
		if err := Write(path, sample()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != sample() {
		t.Fatalf("fixture = %+v, want %+v", got, sample())
	}
}

func TestRefused(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		content string
		want    error
		msg     string
	}{
		"newer version": {`{"version": 2, "init": {}}`, ErrUnsupportedVersion, "version 2"},
		"no version":    {`{"init": {}}`, ErrUnsupportedVersion, "version 0"},
		"unknown field": {`{"version": 1, "init": {}, "extra": true}`, nil, "unknown field"},
		"not json":      {`garbage`, nil, "not a session file"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want %v containing %q", name, err, c.want, c.msg)
		}
		if _, serr := os.Stat(path); serr != nil {
			t.Errorf("%s: the file is gone after a refused read", name)
		}
	}
}
