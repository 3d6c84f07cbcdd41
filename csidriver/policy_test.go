package csidriver

import (
	"strings"
	"testing"

	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/fuseserver/mountopts"
)

func TestPolicy(t *testing.T) {
	pats, err := ParseEndpointPatterns(" *.amazonaws.com , minio.storage.svc:9000,")
	if err != nil {
		t.Fatal(err)
	}
	s3 := func(u, sts string) volumecontext.Volume { return volumecontext.Volume{Endpoint: u, STSEndpoint: sts} }
	for _, c := range []struct {
		name      string
		p         Policy
		vol       volumecontext.Volume
		ephemeral bool
		want      string // "" allowed, else part of the error
	}{
		{"PV, any endpoint", Policy{InlineVolumes: false, InlineEndpoints: pats}, s3("https://10.0.0.1", ""), false, ""},
		{"PV, http STS refused", DefaultPolicy, s3("https://s3.example.com", "http://sts.example.com"), false, "plain http"},
		{"PV, http STS allowed", Policy{InsecureSTS: true}, s3("https://s3.example.com", "http://sts.example.com"), false, ""},
		{"inline, disabled", Policy{}, s3("https://s3.amazonaws.com", ""), true, "inline CSI volumes are disabled"},
		{"inline, any endpoint by default", DefaultPolicy, s3("https://169.254.169.254", ""), true, ""},
		{"inline, allowed by pattern", Policy{InlineVolumes: true, InlineEndpoints: pats}, s3("https://bucket.s3.eu-west-1.amazonaws.com", ""), true, ""},
		{"inline, allowed host:port", Policy{InlineVolumes: true, InlineEndpoints: pats}, s3("http://minio.storage.svc:9000", ""), true, ""},
		{"inline, wrong port", Policy{InlineVolumes: true, InlineEndpoints: pats}, s3("http://minio.storage.svc:9001", ""), true, "not in the node plugin's allowed endpoints"},
		{"inline, metadata service", Policy{InlineVolumes: true, InlineEndpoints: pats}, s3("http://169.254.169.254", ""), true, "url"},
		{"inline, STS elsewhere", Policy{InlineVolumes: true, InlineEndpoints: pats}, s3("https://s3.amazonaws.com", "https://evil.example.com"), true, "stsEndpoint"},
		{"inline, lookalike", Policy{InlineVolumes: true, InlineEndpoints: pats}, s3("https://amazonaws.com.evil.example", ""), true, "allowed endpoints"},
	} {
		err := c.p.Check(c.vol, c.ephemeral)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	for _, bad := range []string{"https://x", "a@b", "[", "host/path"} {
		if _, err := ParseEndpointPatterns(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestPolicyLimit(t *testing.T) {
	caps := Policy{MaxWriteCacheMiB: 128, MaxStagingMiB: 512}
	opts := func(s string) mountopts.Options {
		o, err := mountopts.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, c := range []struct {
		name string
		p    Policy
		in   string
		want string // String() of the result, or part of the error after "error: "
	}{
		{"no caps", Policy{}, "write_cache_mb=65536,staging_mb=100000", "write_cache_mb=65536,staging_mb=100000"},
		{"defaults under the default caps", DefaultPolicy, "", ""},
		{"defaults lowered to the caps", caps, "", "write_cache_mb=128,staging_mb=512"},
		{"values within the caps", caps, "write_cache_mb=64,staging_mb=256", "write_cache_mb=64,staging_mb=256"},
		{"values at the caps", caps, "write_cache_mb=128,staging_mb=512", "write_cache_mb=128,staging_mb=512"},
		{"write cache off", caps, "write_cache_mb=0", "write_cache_mb=0,staging_mb=512"},
		{"write cache above the cap", caps, "write_cache_mb=65536",
			"error: otherOpts write_cache_mb=65536 is above the node plugin's maximum of 128 (rekey-csi --max-write-cache-mb)"},
		{"staging above the cap", caps, "staging_mb=2048", "error: staging_mb=2048 is above the node plugin's maximum of 512 (rekey-csi --max-staging-mb)"},
		{"default write cache cap, pod asks more", DefaultPolicy, "write_cache_mb=1024", "error: --max-write-cache-mb"},
		{"part larger than the lowered staging", Policy{MaxStagingMiB: 64}, "multipart_size=128,staging_mb=2048", "error: staging_mb=2048 is above"},
		{"part larger than the default lowered", Policy{MaxStagingMiB: 64}, "multipart_size=128", "error: multipart_size=128 is above the node plugin's maximum staging_mb of 64"},
	} {
		got, err := c.p.Limit(opts(c.in))
		if want, ok := strings.CutPrefix(c.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: Limit(%q) = %q, %v; want an error with %q", c.name, c.in, got.String(), err, want)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("%s: Limit(%q) = %q, %v; want %q", c.name, c.in, got.String(), err, c.want)
		}
	}
	for _, bad := range []Policy{{MaxWriteCacheMiB: -1}, {MaxWriteCacheMiB: mountopts.MaxWriteCacheMiB + 1}, {MaxStagingMiB: 1}, {MaxStagingMiB: -5}} {
		if err := bad.ValidateLimits(); err == nil {
			t.Errorf("ValidateLimits(%+v) accepted", bad)
		}
	}
	if err := DefaultPolicy.ValidateLimits(); err != nil {
		t.Errorf("DefaultPolicy: %v", err)
	}
}
