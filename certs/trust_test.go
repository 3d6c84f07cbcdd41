package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
)

func testCA(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	r := &rotator.CertRotator{CAName: "test-ca", CAOrganization: "rekey"}
	ca, err := r.CreateCACert(notAfter.Add(-48*time.Hour), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM
}

func TestMergeBundle(t *testing.T) {
	now := time.Now()
	current := testCA(t, now.Add(24*time.Hour))
	older := testCA(t, now.Add(time.Hour))
	expired := testCA(t, now.Add(-time.Hour))
	next := testCA(t, now.Add(240*time.Hour))
	join := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name     string
		bundle   []byte
		ca       []byte
		want     []byte
		wantFail bool
	}{
		{"empty bundle", nil, current, current, false},
		{"already trusted", current, current, current, false},
		{"new CA first, old kept", current, next, join(next, current), false},
		{"valid old CAs kept, expired dropped", join(current, expired, older), next, join(next, current, older), false},
		{"CA already in a longer bundle moves first", join(current, next), next, join(next, current), false},
		{"unreadable bundle replaced", []byte("garbage"), next, next, false},
		{"no CA", current, []byte("garbage"), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeBundle(tc.bundle, tc.ca, now)
			if tc.wantFail {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %d certificates %q, want %d", count(got), subjects(t, got), count(tc.want))
			}
		})
	}
}

func count(b []byte) int { return bytes.Count(b, []byte("BEGIN CERTIFICATE")) }

func subjects(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.NotAfter.String())
	}
}

func TestConfigValidate(t *testing.T) {
	base := DefaultConfig()
	base.Namespace, base.CertDir = "rekey-system", "/tmp/certs"
	if err := base.validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"IP SAN":            func(c *Config) { c.ExtraSANs = []string{"127.0.0.1"} },
		"IPv6 SAN":          func(c *Config) { c.ExtraSANs = []string{"::1"} },
		"not a DNS name":    func(c *Config) { c.ExtraSANs = []string{"a b"} },
		"no namespace":      func(c *Config) { c.Namespace = "" },
		"cert outlives CA":  func(c *Config) { c.CertValidity = 2 * c.CAValidity },
		"no check interval": func(c *Config) { c.CheckInterval = 0 },
	} {
		c := base
		mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
