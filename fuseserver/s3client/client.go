package s3client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
)

// Defaults of Config.
const (
	DefaultRegion          = "us-east-1"
	DefaultValidateTimeout = 5 * time.Second
	DefaultMaxAttempts     = 5
)

// Config describes the endpoint and bucket a Client talks to.
type Config struct {
	// Endpoint is the S3 URL, e.g. https://oss-cn-hangzhou.aliyuncs.com or
	// http://127.0.0.1:9000. A bare host gets https://.
	Endpoint string
	// Region signs requests; DefaultRegion when empty.
	Region string
	// Bucket and Prefix are where Validate sends its probe.
	Bucket string
	Prefix string
	// PathStyle addresses buckets as endpoint/bucket instead of bucket.endpoint.
	PathStyle bool
	// CAFile is an optional PEM bundle trusted in addition to the system roots.
	CAFile string
	// ValidateTimeout bounds the probe of Validate (DefaultValidateTimeout).
	ValidateTimeout time.Duration
	// MaxAttempts per request, retries included (DefaultMaxAttempts).
	MaxAttempts int
	// MaxConnsPerHost bounds parallel connections (default 64).
	MaxConnsPerHost int
}

// Client is an S3 client with swappable keys.
type Client struct {
	cfg      Config
	host     string
	provider *Provider
	api      *s3.Client
	probe    *s3.Client // the same client with its own retries (newProbeRetryer), for Validate
}

// New returns a Client that signs with initial until SetKeys replaces them.
func New(cfg Config, initial keys.Keys) (*Client, error) {
	u, err := ParseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	cfg.Endpoint = u.String()
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.Bucket == "" {
		return nil, errors.New("s3client: bucket is required")
	}
	if cfg.ValidateTimeout <= 0 {
		cfg.ValidateTimeout = DefaultValidateTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = 64
	}
	httpClient, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, host: hostPort(u), provider: NewProvider(initial)}
	opts := s3.Options{
		BaseEndpoint:               aws.String(cfg.Endpoint),
		Region:                     cfg.Region,
		UsePathStyle:               cfg.PathStyle,
		Credentials:                c.provider,
		HTTPClient:                 httpClient,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Retryer:                    newRetryer(cfg.MaxAttempts),
		APIOptions:                 []func(*middleware.Stack) error{addAuthRetry(c.provider)},
		HTTPSignerV4:               newKeySafeSigner(),
	}
	c.api = s3.New(opts)
	c.probe = s3.New(opts, func(o *s3.Options) {
		o.Retryer = newProbeRetryer()
		o.APIOptions = nil
		o.HTTPSignerV4 = newKeySafeSigner() // the probe signs with candidate keys; keep its cache apart
	})
	return c, nil
}

// API is the client every filesystem operation uses.
func (c *Client) API() *s3.Client { return c.api }

// Host is the endpoint's host:port, as named in refusal messages.
func (c *Client) Host() string { return c.host }

// SetKeys replaces the keys for every request signed from now on.
func (c *Client) SetKeys(k keys.Keys, gen uint64) { c.provider.Set(k, gen) }

// Apply puts keys accepted by a rotation.Manager into use (rotation.Applier).
func (c *Client) Apply(k keys.Keys, l rotation.Ledger) { c.SetKeys(k, l.Generation) }

// ParseEndpoint checks an endpoint URL against the allowlist: http or https,
// a host, no user info, query or fragment. A bare host gets https://.
func ParseEndpoint(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("s3client: endpoint URL is required")
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the input (and parts of it): never with what
		// may be user info.
		var ue *url.Error
		if strings.Contains(raw, "@") || !errors.As(err, &ue) {
			return nil, errors.New("s3client: endpoint URL does not parse")
		}
		return nil, fmt.Errorf("s3client: endpoint URL does not parse: %w", ue.Err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("s3client: endpoint scheme %q not allowed, want http or https", u.Scheme)
	case u.Host == "":
		return nil, errors.New("s3client: endpoint URL has no host")
	case u.User != nil:
		return nil, errors.New("s3client: endpoint URL must not carry user info")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("s3client: endpoint URL must not carry a query or fragment")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "http" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return net.JoinHostPort(u.Hostname(), "443")
}

func newHTTPClient(cfg Config) (*awshttp.BuildableClient, error) {
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3client: read CA file: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3client: CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	return awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = cfg.MaxConnsPerHost * 2
		t.MaxIdleConnsPerHost = cfg.MaxConnsPerHost
		t.IdleConnTimeout = 90 * time.Second
		if roots != nil {
			if t.TLSClientConfig == nil {
				t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			t.TLSClientConfig.RootCAs = roots
		}
	}).WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = 10 * time.Second
		d.KeepAlive = 30 * time.Second
	}), nil
}
