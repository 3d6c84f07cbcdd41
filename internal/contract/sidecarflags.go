package contract

// Flags of the sidecar beyond its configuration of sources, for the webhook
// to set probes and scraping.
const (
	// SidecarHealthAddrFlag makes the sidecar serve /readyz (every volume
	// runs the newest keys) and /healthz; its value is "host:port" or
	// "unix:/path". Kubelet's HTTP probes reach the pod IP, so probes need
	// a host:port such as ":9809".
	SidecarHealthAddrFlag = "health-addr"
	// SidecarMetricsAddrFlag makes the sidecar serve Prometheus /metrics
	// ("host:port" or "unix:/path"; it may equal the health address).
	SidecarMetricsAddrFlag = "metrics-addr"
	// SidecarSTSDurationFlag is the requested lifetime of temporary keys
	// (STS DurationSeconds), a Go duration; 0 or absent lets STS choose.
	SidecarSTSDurationFlag = "sts-duration"
	// SidecarHealthPort is the port suggested for SidecarHealthAddrFlag.
	SidecarHealthPort = 9809
)
