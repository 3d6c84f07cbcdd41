package mountopts_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"rekey.dev/rekey/fuseserver/mountopts"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		check   func(o mountopts.Options) bool
		wantErr string
	}{
		{in: "", check: func(o mountopts.Options) bool { return o == mountopts.Default() }},
		{in: "-o max_stat_cache_size=0 -o allow_other", check: func(o mountopts.Options) bool { return o.StatCacheSize == 0 && o.AllowOther }},
		{in: "uid=1000,gid=2000,umask=027,mp_umask=0002,ro", check: func(o mountopts.Options) bool {
			return o.UID == 1000 && o.GID == 2000 && o.Umask == 0o027 && o.MountUmask == 0o002 && o.ReadOnly
		}},
		{in: "-ouse_path_request_style -o stat_cache_expire=5", check: func(o mountopts.Options) bool {
			return o.PathStyle && o.StatCacheTTL == 5*time.Second
		}},
		{in: "-o multipart_size=64", check: func(o mountopts.Options) bool { return o.PartSizeMiB == 64 }},
		{in: "-o multipart_threshold=8,readahead_mb=0", check: func(o mountopts.Options) bool { return o.ThresholdMiB == 8 && o.ReadAheadMiB == 0 }},
		{in: "multipart_threshold=4", wantErr: "between 5 and"},
		{in: "readahead_mb=-1", wantErr: "between 0 and"},
		{in: "readdirplus=auto", check: func(o mountopts.Options) bool { return o.ReaddirPlusAuto }},
		{in: "readdirplus=always", check: func(o mountopts.Options) bool { return !o.ReaddirPlusAuto }},
		{in: "readdirplus=sometimes", wantErr: "neither auto nor always"},
		{in: "write_cache_mb=0", check: func(o mountopts.Options) bool { return o.WriteCacheMiB == 0 }},
		{in: "write_cache_mb=-5", wantErr: "between 0 and"},
		{in: "staging_mb=2048", check: func(o mountopts.Options) bool { return o.StagingMiB == 2048 }},
		{in: "", check: func(o mountopts.Options) bool { return o.StagingMiB == mountopts.DefaultStagingMiB }},
		{in: "staging_mb=0", wantErr: `"staging_mb": "0" is not a number between 64 and`},
		{in: "staging_mb=-1", wantErr: "between 64 and"},
		{in: "staging_mb=99999999999", wantErr: "between 64 and"},
		{in: "staging_mb=1e3", wantErr: "between 64 and"},
		{in: "staging_mb=64,multipart_size=128", wantErr: "staging_mb=64 is below multipart_size=128"},
		{in: "staging_mb=128,multipart_size=128", check: func(o mountopts.Options) bool { return o.StagingMiB == 128 }},
		{in: "-o nosuid", wantErr: `unknown option "nosuid"`},
		{in: "-o passwd_file=/etc/shadow", wantErr: "unknown option"},
		{in: "uid=root", wantErr: `"uid": "root" is not a valid ID`},
		{in: "umask=999", wantErr: "octal mask"},
		{in: "allow_other=1", wantErr: "takes no value"},
		{in: "uid", wantErr: "needs a value"},
		{in: "uid=1,uid=2", wantErr: "given twice"},
		{in: "-o", wantErr: "no option list"},
		{in: "--exec=/bin/sh", wantErr: "only -o option lists"},
		{in: "multipart_size=1", wantErr: "between 5 and"},
		{in: "x$(reboot)", wantErr: "unknown option"},
	}
	for _, tt := range tests {
		got, err := mountopts.Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !tt.check(got) {
			t.Errorf("Parse(%q) = %+v", tt.in, got)
		}
	}
	if _, err := mountopts.Parse("bogus"); !errors.Is(err, mountopts.ErrUnknown) {
		t.Errorf("unknown option error does not wrap ErrUnknown: %v", err)
	}
}

func TestStringRoundTrip(t *testing.T) {
	in := "uid=1000,gid=1000,umask=0027,mp_umask=0002,allow_other,ro,use_path_request_style,stat_cache_expire=5,max_stat_cache_size=10,multipart_size=32,multipart_threshold=100,readahead_mb=256,readdirplus=auto,write_cache_mb=0,staging_mb=4096"
	o, err := mountopts.Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.String(); got != in {
		t.Errorf("String() = %q, want %q", got, in)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("-o uid=1,allow_other")
	f.Add("umask=022 -o ro")
	f.Add("-o staging_mb=64,write_cache_mb=0")
	f.Add("staging_mb=100,multipart_size=200")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := mountopts.Parse(s)
		if err != nil {
			return
		}
		again, err := mountopts.Parse(o.String())
		if err != nil || again != o {
			t.Fatalf("round trip of %q: %+v vs %+v (%v)", s, o, again, err)
		}
	})
}
