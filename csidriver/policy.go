package csidriver

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"

	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/fuseserver/mountopts"
)

// Policy is what the node plugin's administrator allows: pod authors write
// inline (ephemeral) volumes themselves, so their endpoint and STS endpoint
// are requests the node makes on a pod author's behalf (SSRF from the
// node), and an STS endpoint over plain http would carry the pod's
// service-account token in clear.
type Policy struct {
	// InlineVolumes allows inline CSI volumes (`csi:` in a pod spec).
	InlineVolumes bool
	// InlineEndpoints are the hosts an inline volume's endpoint and STS
	// endpoint may name: "host", "host:port", or "*.domain" patterns
	// (path.Match on the host). Empty: any host.
	InlineEndpoints []string
	// InsecureSTS allows http:// STS endpoints (test clusters).
	InsecureSTS bool
	// MaxWriteCacheMiB and MaxStagingMiB cap the mount options
	// write_cache_mb and staging_mb, which take the node's disk: a volume
	// setting more is refused; the default, when it is above the cap, is
	// lowered to it (Limit). Zero: no cap.
	MaxWriteCacheMiB int
	MaxStagingMiB    int
}

// Default caps of the node plugin (rekey-csi --max-write-cache-mb,
// --max-staging-mb): the write cache no larger than its default, a mount's
// staging up to four times its default (docs/csi-driver.md, "Disk").
const (
	DefaultMaxWriteCacheMiB = mountopts.DefaultWriteCacheMiB
	DefaultMaxStagingMiB    = 4 * mountopts.DefaultStagingMiB
)

// DefaultPolicy allows inline volumes to any endpoint, refuses STS over
// plain http and caps the staging disk options at their default caps.
var DefaultPolicy = Policy{InlineVolumes: true, MaxWriteCacheMiB: DefaultMaxWriteCacheMiB, MaxStagingMiB: DefaultMaxStagingMiB}

// ValidateLimits checks the caps: 0 (none) or within what the mount
// options accept, and a staging cap that holds a streamed upload's part.
func (p Policy) ValidateLimits() error {
	if p.MaxWriteCacheMiB < 0 || p.MaxWriteCacheMiB > mountopts.MaxWriteCacheMiB {
		return fmt.Errorf("--max-write-cache-mb=%d: want 0 (no cap) to %d", p.MaxWriteCacheMiB, mountopts.MaxWriteCacheMiB)
	}
	if p.MaxStagingMiB != 0 && (p.MaxStagingMiB < mountopts.MinStagingMiB || p.MaxStagingMiB > mountopts.MaxStagingMiB) {
		return fmt.Errorf("--max-staging-mb=%d: want 0 (no cap) or %d to %d", p.MaxStagingMiB, mountopts.MinStagingMiB, mountopts.MaxStagingMiB)
	}
	return nil
}

// Limit applies the caps on staging disk to a volume's mount options: a
// value the volume sets above its cap is refused with an error naming
// the option and the flag; a default above the cap (the volume set
// nothing) is lowered to the cap.
func (p Policy) Limit(o mountopts.Options) (mountopts.Options, error) {
	for _, c := range []struct {
		option, flag string
		v            *int
		def, max     int
	}{
		{"write_cache_mb", "--max-write-cache-mb", &o.WriteCacheMiB, mountopts.DefaultWriteCacheMiB, p.MaxWriteCacheMiB},
		{"staging_mb", "--max-staging-mb", &o.StagingMiB, mountopts.DefaultStagingMiB, p.MaxStagingMiB},
	} {
		switch {
		case c.max <= 0 || *c.v <= c.max:
		case *c.v == c.def:
			*c.v = c.max
		default:
			return o, fmt.Errorf("otherOpts %s=%d is above the node plugin's maximum of %d (rekey-csi %s): ask for %d or less, or ask the cluster administrator",
				c.option, *c.v, c.max, c.flag, c.max)
		}
	}
	if o.StagingMiB < o.PartSizeMiB {
		return o, fmt.Errorf("otherOpts multipart_size=%d is above the node plugin's maximum staging_mb of %d (rekey-csi --max-staging-mb): a streamed upload stages at least one part",
			o.PartSizeMiB, o.StagingMiB)
	}
	return o, nil
}

// ParseEndpointPatterns parses a comma-separated list of host patterns.
func ParseEndpointPatterns(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		if strings.ContainsAny(p, "/@?#") {
			return nil, fmt.Errorf("endpoint pattern %q: want host, host:port or *.domain", p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("endpoint pattern %q: %w", p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Check decides whether vol may be published; ephemeral marks an inline
// volume. The error says what the administrator allows.
func (p Policy) Check(vol volumecontext.Volume, ephemeral bool) error {
	if vol.STSEndpoint != "" && !p.InsecureSTS && strings.HasPrefix(strings.ToLower(vol.STSEndpoint), "http://") {
		return fmt.Errorf("stsEndpoint %s is plain http: the service-account token would cross the network in clear; "+
			"use https (the node plugin allows http only with --allow-insecure-sts)", volumecontext.ShownURL(vol.STSEndpoint))
	}
	if !ephemeral {
		return nil
	}
	if !p.InlineVolumes {
		return fmt.Errorf("inline CSI volumes are disabled on this cluster (rekey-csi --inline-volumes=false): use a PersistentVolume")
	}
	for _, e := range []struct{ field, raw string }{{"url", vol.Endpoint}, {"stsEndpoint", vol.STSEndpoint}} {
		if e.raw == "" || len(p.InlineEndpoints) == 0 {
			continue
		}
		if !p.endpointAllowed(e.raw) {
			return fmt.Errorf("inline volume %s %s: host not in the node plugin's allowed endpoints (--inline-endpoints=%s)",
				e.field, volumecontext.ShownURL(e.raw), strings.Join(p.InlineEndpoints, ","))
		}
	}
	return nil
}

func (p Policy) endpointAllowed(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Hostname())
	hostPort := host
	if u.Port() != "" {
		hostPort = net.JoinHostPort(host, u.Port())
	}
	for _, pat := range p.InlineEndpoints {
		for _, h := range []string{host, hostPort} {
			if ok, _ := path.Match(pat, h); ok {
				return true
			}
		}
	}
	return false
}
