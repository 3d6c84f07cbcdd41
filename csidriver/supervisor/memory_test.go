package supervisor

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"rekey.dev/rekey/fuseserver/mountopts"
	"rekey.dev/rekey/internal/keys"
)

func TestSizeServer(t *testing.T) {
	const mib = 1 << 20
	def := mountopts.DefaultReadAheadMiB
	for _, tc := range []struct {
		name              string
		budget, readAhead int
		want              ServerBudget
	}{
		{"no budget keeps the volume's read-ahead", 0, def, ServerBudget{ReadAheadMiB: def}},
		{"no budget, read-ahead off", 0, 0, ServerBudget{}},
		{"negative budget is none", -5, 32, ServerBudget{ReadAheadMiB: 32}},
		// 256: GOMEMLIMIT 256-25 = 231; (231-64)/2 = 83 -> 80 (10 chunks).
		{"default budget caps the default read-ahead", 256, def, ServerBudget{256 * mib, 231 * mib, 80}},
		{"a volume asking for less keeps it", 256, 32, ServerBudget{256 * mib, 231 * mib, 32}},
		{"a volume asking for more is capped", 256, 1024, ServerBudget{256 * mib, 231 * mib, 80}},
		{"read-ahead off stays off", 256, 0, ServerBudget{256 * mib, 231 * mib, 0}},
		// 512: 512-51 = 461; (461-64)/2 = 198 -> 192; the default 128 fits.
		{"a large budget leaves the default alone", 512, def, ServerBudget{512 * mib, 461 * mib, def}},
		{"a large budget caps a large ask", 512, 4096, ServerBudget{512 * mib, 461 * mib, 192}},
		// 128: slack 16; 112; (112-64)/2 = 24.
		{"small budget", 128, def, ServerBudget{128 * mib, 112 * mib, 24}},
		// 64: 48 < the base: no read-ahead.
		{"the minimum budget has no read-ahead", 64, def, ServerBudget{64 * mib, 48 * mib, 0}},
		{"below the minimum counts as the minimum", 10, def, ServerBudget{64 * mib, 48 * mib, 0}},
		// 2048: slack 204; 1844; 890 -> 888.
		{"2 GiB", 2048, 4096, ServerBudget{2048 * mib, 1844 * mib, 888}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SizeServer(tc.budget, tc.readAhead)
			if got != tc.want {
				t.Errorf("SizeServer(%d, %d) = %+v, want %+v", tc.budget, tc.readAhead, got, tc.want)
			}
			if got.LimitBytes > 0 {
				if got.GoMemLimitBytes >= got.LimitBytes || got.ReadAheadMiB%readAheadChunkMiB != 0 && got.ReadAheadMiB != tc.readAhead ||
					int64(got.ReadAheadMiB+serverBaseMiB)<<20 > got.GoMemLimitBytes && got.ReadAheadMiB > 0 {
					t.Errorf("SizeServer(%d, %d) = %+v breaks the rule", tc.budget, tc.readAhead, got)
				}
			}
		})
	}
}

func TestServerEnvAndOptions(t *testing.T) {
	none := &Supervisor{}
	if env := none.serverEnv(); env == nil || len(env) != 0 {
		t.Errorf("env without a budget = %#v, want empty (not nil: nil would inherit ours)", env)
	}
	if got := none.serverOptions("use_path_request_style"); got != "use_path_request_style" {
		t.Errorf("options without a budget = %q", got)
	}

	s := &Supervisor{cfg: Config{Memory: ServerMemory{BudgetMiB: 256}}}
	if env := s.serverEnv(); !slices.Equal(env, []string{"GOMEMLIMIT=242221056"}) { // 231 MiB
		t.Errorf("env = %q, want GOMEMLIMIT only", env)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "readahead_mb=80"},
		{"use_path_request_style,uid=1000", "uid=1000,use_path_request_style,readahead_mb=80"},
		{"-o readahead_mb=512 -o ro", "ro,readahead_mb=80"},
		{"readahead_mb=16", "readahead_mb=16"}, // less than allowed: as it is
		{"readahead_mb=0,allow_other", "readahead_mb=0,allow_other"},
		{"nosuchoption", "nosuchoption"}, // the server refuses it
	} {
		got := s.serverOptions(tc.in)
		if got != tc.want {
			t.Errorf("serverOptions(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if o, err := mountopts.Parse(got); err == nil && o.ReadAheadMiB > 80 {
			t.Errorf("serverOptions(%q) = %q: read-ahead %d over the budget's 80", tc.in, got, o.ReadAheadMiB)
		}
	}
}

// TestServerCommandKeepsKeysOffArgv: the initial keys reach a FUSE server
// through an inherited pipe (--keys-fd), never in its command line or
// environment, which ps and /proc/<pid>/cmdline and environ show.
func TestServerCommandKeepsKeysOffArgv(t *testing.T) {
	k := keys.Keys{AccessKeyID: "AKIDARGV", SecretAccessKey: "argv-secret-value", SessionToken: "argv-token-value"}
	s := &Supervisor{cfg: Config{FuseBinary: "/bin/true", StateDir: t.TempDir()}}
	cmd, ready, err := s.command(Spec{Endpoint: "https://s3.example.com", Bucket: "bkt", VolumeID: "pv", SecretRef: "ns/pod"},
		Info{ID: "m1", ControlSocket: "/run/m1.sock"}, launch{keys: &k})
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	for _, f := range cmd.ExtraFiles {
		if f != nil {
			defer f.Close()
		}
	}
	visible := strings.Join(slices.Concat(cmd.Args, cmd.Env), "\x00")
	for _, secret := range []string{k.SecretAccessKey, k.SessionToken} {
		if strings.Contains(visible, secret) {
			t.Errorf("command line or environment holds %q: %q", secret, visible)
		}
	}
	if !slices.Contains(cmd.Args, "--keys-fd="+strconv.Itoa(serverKeysFD)) || len(cmd.ExtraFiles) != serverKeysFD-2 {
		t.Fatalf("args %q with %d inherited files, want the keys on descriptor %d", cmd.Args, len(cmd.ExtraFiles), serverKeysFD)
	}
	got, err := keys.Decode(cmd.ExtraFiles[serverKeysFD-3])
	if err != nil || !got.Equal(k) {
		t.Errorf("keys pipe holds %s, %v; want %s", got, err, k)
	}
}
