package csidriver

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"

	"rekey.dev/rekey/csidriver/volumecontext"
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
}

// DefaultPolicy allows inline volumes to any endpoint and refuses STS over
// plain http.
var DefaultPolicy = Policy{InlineVolumes: true}

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
