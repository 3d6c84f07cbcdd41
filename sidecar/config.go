package sidecar

import (
	"errors"
	"fmt"
	"rekey.dev/rekey/fuseserver/control"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"rekey.dev/rekey/internal/contract"
)

// Defaults of Config.
const (
	DefaultPollInterval  = 45 * time.Second
	DefaultDebounce      = 20 * time.Millisecond
	DefaultRefreshMargin = 5 * time.Minute
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = 2 * time.Minute
	DefaultRPCTimeout    = 30 * time.Second
)

// Config configures Run. Only Sources and SocketDir are required.
type Config struct {
	// Sources says where each volume's keys come from (the --sources flag).
	Sources []contract.Source
	// SocketDir holds the FUSE servers' control sockets (*.sock).
	SocketDir string
	// PodUID resolves the volume IDs of inline volumes (contract.EphemeralVolumeID).
	PodUID string

	// HealthAddr serves /readyz and /healthz: "host:port" or "unix:/path";
	// empty disables it.
	HealthAddr string
	// MetricsAddr serves Prometheus /metrics: "host:port" or "unix:/path";
	// empty disables it. It may equal HealthAddr.
	MetricsAddr string

	// PollInterval is the safety-net poll of Secret directories, token
	// files and sockets, and the period of Status checks that notice a
	// restarted FUSE server. 0 means DefaultPollInterval.
	PollInterval time.Duration
	// Debounce coalesces bursts of file events. 0 means DefaultDebounce.
	Debounce time.Duration
	// RefreshMargin: temporary keys are refreshed at the latest this long
	// before they expire (and at the latest at 80 % of their lifetime).
	// 0 means DefaultRefreshMargin.
	RefreshMargin time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff of
	// STS calls and pushes. 0 means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// RPCTimeout bounds one control RPC; a Swap validates the keys against
	// S3 first. 0 means DefaultRPCTimeout.
	RPCTimeout time.Duration

	// STSSessionName is the RoleSessionName sent to STS; empty means
	// "rekey-sidecar".
	STSSessionName string
	// STSDuration is the requested lifetime of temporary keys (DurationSeconds);
	// 0 lets STS choose its default (one hour on AWS, Alibaba and MinIO).
	STSDuration time.Duration

	// Log receives the sidecar's log lines. The zero value discards.
	Log logr.Logger
	// ServerUIDs are the UIDs a FUSE server may run as, seen from the
	// sidecar; a socket served by any other UID never gets keys (default
	// control.TrustedServerUIDs: root, or the overflow UID in a user
	// namespace).
	ServerUIDs []uint32
	// Clock drives refresh timing; nil means the real clock.
	Clock clock.WithTicker
	// OnSwap, if set, is called after every Swap answer (for tests, the
	// demo and benchmarks). It must not block.
	OnSwap func(SwapEvent)
	// NewAssumer builds the STS client of a source; nil means NewAssumer.
	// Tests replace it to point sources at fake STS servers.
	NewAssumer func(src contract.Source, sessionName string, duration time.Duration) (Assumer, error)
}

// SwapEvent describes one Swap answer.
type SwapEvent struct {
	Socket, VolumeID string
	Generation       uint64
	Fingerprint      string // of the keys pushed
	Result           string // applied, unchanged, refused, stale
	Reason           string // of a refusal: rotation.Reason's name ("invalid credentials", ...)
	Message          string // the server's message
}

func (c *Config) setDefaults() {
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Debounce <= 0 {
		c.Debounce = DefaultDebounce
	}
	if c.RefreshMargin <= 0 {
		c.RefreshMargin = DefaultRefreshMargin
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = DefaultRPCTimeout
	}
	if c.STSSessionName == "" {
		c.STSSessionName = "rekey-sidecar"
	}
	if len(c.ServerUIDs) == 0 {
		c.ServerUIDs = control.TrustedServerUIDs()
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.NewAssumer == nil {
		c.NewAssumer = NewAssumer
	}
}

// volumeID is the volume handle a source's FUSE server reports.
func (c *Config) volumeID(s contract.Source) string {
	if s.VolumeID != "" {
		return s.VolumeID
	}
	return contract.EphemeralVolumeID(c.PodUID, s.VolumeName)
}

// validate checks the configuration; the errors name sources by index and
// volume, never a value that could be secret (there are none in Config).
func (c *Config) validate() error {
	var errs []error
	if c.SocketDir == "" {
		errs = append(errs, errors.New("socket dir is required"))
	}
	if len(c.Sources) == 0 {
		errs = append(errs, errors.New("at least one source is required"))
	}
	seen := map[string]int{}
	for i, s := range c.Sources {
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("source %d (volume %q): %s", i, s.VolumeID+s.VolumeName, fmt.Sprintf(format, a...)))
		}
		if s.VolumeID == "" {
			if s.VolumeName == "" {
				bad("volumeId or volumeName is required")
				continue
			}
			if c.PodUID == "" {
				bad("an inline volume needs the pod UID (--%s)", contract.SidecarPodUIDFlag)
				continue
			}
		}
		id := c.volumeID(s)
		if j, dup := seen[id]; dup {
			bad("same volume as source %d", j)
		}
		seen[id] = i
		switch s.AuthType {
		case "", contract.AuthTypeSecret:
			if s.SecretDir == "" {
				bad("secretDir is required for authType %s", contract.AuthTypeSecret)
			}
		case contract.AuthTypeRRSA:
			if s.TokenFile == "" || s.RoleARN == "" || s.OIDCProviderARN == "" {
				bad("tokenFile, roleArn and oidcProviderArn are required for authType %s", s.AuthType)
			}
		case contract.AuthTypeIRSA:
			if s.TokenFile == "" {
				bad("tokenFile is required for authType %s", s.AuthType)
			}
		default:
			bad("authType %q unknown, want %s, %s or %s", s.AuthType,
				contract.AuthTypeSecret, contract.AuthTypeRRSA, contract.AuthTypeIRSA)
		}
	}
	return errors.Join(errs...)
}

// authType is the source's auth type with the default applied.
func authType(s contract.Source) string {
	if s.AuthType == "" {
		return contract.AuthTypeSecret
	}
	return s.AuthType
}
