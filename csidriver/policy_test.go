package csidriver

import (
	"strings"
	"testing"

	"rekey.dev/rekey/csidriver/volumecontext"
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
