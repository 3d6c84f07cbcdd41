package contract

import (
	"errors"
	"testing"
)

// TestVolumeIDV1Fixtures pins version 1: handles written by a released
// rekey-controller must parse the same in every later one.
func TestVolumeIDV1Fixtures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id   string
		want ProvisionedVolume
	}{
		{"rk1|p|path|shared|default/data-0|us-east-1|http://minio.storage:9000",
			ProvisionedVolume{Mode: "p", PathStyle: true, Bucket: "shared", Prefix: "default/data-0", Region: "us-east-1", Endpoint: "http://minio.storage:9000"}},
		{"rk1|b||pvc-0b6e6a1c-5f1e-4d55-9c1b-2a0e8f3d7c11|||https://s3.example.com",
			ProvisionedVolume{Mode: "b", Bucket: "pvc-0b6e6a1c-5f1e-4d55-9c1b-2a0e8f3d7c11", Endpoint: "https://s3.example.com"}},
		{"rk1|p||team.data|a/b/c||https://oss-cn-hangzhou.aliyuncs.com",
			ProvisionedVolume{Mode: "p", Bucket: "team.data", Prefix: "a/b/c", Endpoint: "https://oss-cn-hangzhou.aliyuncs.com"}},
	} {
		got, err := ParseVolumeID(tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.id, got, tc.want)
		}
		back, err := got.String()
		if err != nil || back != tc.id {
			t.Errorf("round trip of %s: %q, %v", tc.id, back, err)
		}
	}
}

func TestVolumeIDRefused(t *testing.T) {
	t.Parallel()
	for _, id := range []string{
		"",
		"bucket/prefix",                   // a csi-s3 static handle
		"rk2|p|b|x||http://h",             // a future version
		"rk1|p|b|x|http://h",              // a field missing
		"rk1|p|b||r|http://h",             // prefix volume without prefix
		"rk1|q|b|x||http://h",             // unknown mode
		"rk1|p||x||http://h",              // no bucket
		"rk1|p|b|x||",                     // no endpoint
		"rk1|p|b|/x||http://h",            // prefix with a leading '/'
		"rk1|p|b|x|r|http://h|extra",      // a field too many
		"fake-vol-id-0123456789abcdefghi", // csi-sanity's invalid handle
	} {
		if _, err := ParseVolumeID(id); !errors.Is(err, ErrVolumeID) {
			t.Errorf("ParseVolumeID(%q) = %v, want ErrVolumeID", id, err)
		}
	}
	if _, err := (ProvisionedVolume{Mode: "p", Bucket: "b", Prefix: "a|b", Endpoint: "http://h"}).String(); !errors.Is(err, ErrVolumeID) {
		t.Errorf("a prefix with '|' encoded: %v", err)
	}
}
