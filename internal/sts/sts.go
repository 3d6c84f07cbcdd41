// Package sts exchanges a service-account (web identity) token for
// temporary keys: AssumeRoleWithOIDC at Alibaba Cloud STS (RRSA) and
// AssumeRoleWithWebIdentity at AWS STS, MinIO and Ceph RGW (IRSA). The
// sidecar uses it to refresh keys from a projected token file and the CSI
// node plugin to exchange the token kubelet passes at NodePublishVolume.
// Tokens and keys never appear in errors.
package sts

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"rekey.dev/rekey/internal/keys"
)

// Protocol constants.
const (
	// OIDCAction and OIDCVersion are Alibaba Cloud STS's RPC-style action
	// and API version for RRSA.
	OIDCAction  = "AssumeRoleWithOIDC"
	OIDCVersion = "2015-04-01"
	// WebIdentityAction and WebIdentityVersion are the AWS STS query API's
	// action and version, also served by MinIO and Ceph RGW.
	WebIdentityAction  = "AssumeRoleWithWebIdentity"
	WebIdentityVersion = "2011-06-15"

	// DefaultAlibabaSTSEndpoint and DefaultAWSSTSEndpoint are used when a
	// source names neither an endpoint nor a region.
	DefaultAlibabaSTSEndpoint = "https://sts.aliyuncs.com"
	DefaultAWSSTSEndpoint     = "https://sts.amazonaws.com"

	maxResponse = 1 << 20
	maxMessage  = 512
	httpTimeout = 30 * time.Second
)

// ErrResponse is wrapped by errors about an STS answer that could not be
// understood (not JSON/XML, no credentials, invalid keys).
var ErrResponse = errors.New("sts: unusable STS response")

// Assumer exchanges a web identity token for temporary keys.
type Assumer interface {
	// Assume sends token to STS and returns the keys it grants, with their
	// expiration. Errors never contain the token or the keys.
	Assume(ctx context.Context, token string) (keys.Keys, error)
	// Action names the STS call, for logs and metrics.
	Action() string
}

// Error is an answer of STS that refuses the call.
type Error struct {
	Action     string
	StatusCode int
	Code       string // e.g. AuthenticationFail.OIDCToken.Expired, InvalidIdentityToken
	Message    string // STS's text, bounded, with the token scrubbed
	RequestID  string
}

// Error describes the refusal: action, HTTP status, STS code and message.
func (e *Error) Error() string {
	s := fmt.Sprintf("STS %s refused: HTTP %d", e.Action, e.StatusCode)
	if e.Code != "" {
		s += ", code " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request id " + e.RequestID + ")"
	}
	return s
}

// Temporary reports whether trying again later may succeed: server errors,
// throttling, and an identity provider STS could not reach.
func (e *Error) Temporary() bool {
	if e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests {
		return true
	}
	for _, c := range []string{"Throttling", "IDPCommunicationError", "ServiceUnavailable", "InternalError", "RequestTimeout"} {
		if strings.HasPrefix(e.Code, c) {
			return true
		}
	}
	return false
}

// IsRefusal reports whether err is STS definitively refusing the token or
// the role (as opposed to an outage).
func IsRefusal(err error) bool {
	var se *Error
	return errors.As(err, &se) && !se.Temporary()
}

// Kinds of token exchange: the volume attribute authType and the sidecar
// source's auth type use the same words.
const (
	KindRRSA = "rrsa" // Alibaba Cloud AssumeRoleWithOIDC
	KindIRSA = "irsa" // AWS-style AssumeRoleWithWebIdentity (AWS, MinIO, Ceph RGW)
)

// Config describes one role to assume.
type Config struct {
	// Kind is KindRRSA or KindIRSA.
	Kind string
	// Endpoint is the STS URL; empty means the region's endpoint, or the
	// provider's global one without a region. A bare host gets https://.
	Endpoint string
	Region   string
	// RoleARN is the role to assume; OIDCProviderARN is required by rrsa.
	RoleARN, OIDCProviderARN string
	// SessionName is the RoleSessionName.
	SessionName string
	// Duration is the requested lifetime (DurationSeconds); 0 lets STS choose.
	Duration time.Duration
	// HTTP is the client; nil means one with a 30 s timeout.
	HTTP *http.Client
}

// New returns the STS client of cfg.
func New(cfg Config) (Assumer, error) {
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: httpTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	switch cfg.Kind {
	case KindRRSA:
		ep := cfg.Endpoint
		if ep == "" && cfg.Region != "" {
			ep = "https://sts." + cfg.Region + ".aliyuncs.com"
		}
		if ep == "" {
			ep = DefaultAlibabaSTSEndpoint
		}
		return &OIDCAssumer{Endpoint: withScheme(ep), RoleARN: cfg.RoleARN, OIDCProviderARN: cfg.OIDCProviderARN,
			SessionName: cfg.SessionName, Duration: cfg.Duration, HTTP: hc}, nil
	case KindIRSA:
		ep := cfg.Endpoint
		if ep == "" && cfg.Region != "" {
			ep = "https://sts." + cfg.Region + ".amazonaws.com"
		}
		if ep == "" {
			ep = DefaultAWSSTSEndpoint
		}
		return &WebIdentityAssumer{Endpoint: withScheme(ep), RoleARN: cfg.RoleARN,
			SessionName: cfg.SessionName, Duration: cfg.Duration, HTTP: hc}, nil
	}
	return nil, fmt.Errorf("sts: kind %q does not use STS", cfg.Kind)
}

func withScheme(ep string) string {
	if strings.Contains(ep, "://") {
		return ep
	}
	return "https://" + ep
}

// OIDCAssumer calls Alibaba Cloud STS AssumeRoleWithOIDC (RRSA). The call
// is anonymous: the OIDC token authenticates it. Following Alibaba's API
// reference and its credentials SDKs, the common parameters (Action,
// Version, Format=JSON, Timestamp) go in the query string and the call's
// parameters, the token among them, in a POST form body, so the token never
// appears in a URL.
type OIDCAssumer struct {
	Endpoint        string // e.g. https://sts.cn-hangzhou.aliyuncs.com
	RoleARN         string
	OIDCProviderARN string
	SessionName     string
	Duration        time.Duration // 0: STS default (3600 s); minimum 900 s
	HTTP            *http.Client
	// Now stamps the Timestamp parameter; nil means time.Now.
	Now func() time.Time
}

// Action implements Assumer.
func (a *OIDCAssumer) Action() string { return OIDCAction }

// Assume implements Assumer.
func (a *OIDCAssumer) Assume(ctx context.Context, token string) (keys.Keys, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	q := url.Values{
		"Action":    {OIDCAction},
		"Version":   {OIDCVersion},
		"Format":    {"JSON"},
		"Timestamp": {now().UTC().Format("2006-01-02T15:04:05Z")},
	}
	form := url.Values{
		"RoleArn":         {a.RoleARN},
		"OIDCProviderArn": {a.OIDCProviderARN},
		"OIDCToken":       {token},
		"RoleSessionName": {a.SessionName},
	}
	if a.Duration > 0 {
		form.Set("DurationSeconds", strconv.Itoa(int(a.Duration/time.Second)))
	}
	status, body, err := post(ctx, a.HTTP, OIDCAction, strings.TrimRight(a.Endpoint, "/")+"/?"+q.Encode(), form)
	if err != nil {
		return keys.Keys{}, err
	}
	if status != http.StatusOK {
		var e struct {
			RequestID string `json:"RequestId"`
			Code      string `json:"Code"`
			Message   string `json:"Message"`
		}
		_ = json.Unmarshal(body, &e)
		return keys.Keys{}, &Error{Action: OIDCAction, StatusCode: status, Code: bounded(e.Code, 128),
			Message: scrubToken(e.Message, token), RequestID: bounded(e.RequestID, 128)}
	}
	var ok struct {
		Credentials *struct {
			AccessKeyID     string `json:"AccessKeyId"`
			AccessKeySecret string `json:"AccessKeySecret"`
			SecurityToken   string `json:"SecurityToken"`
			Expiration      string `json:"Expiration"`
		} `json:"Credentials"`
	}
	if err := json.Unmarshal(body, &ok); err != nil || ok.Credentials == nil {
		return keys.Keys{}, fmt.Errorf("%w: %s answered HTTP 200 without Credentials", ErrResponse, OIDCAction)
	}
	c := ok.Credentials
	return stsKeys(OIDCAction, c.AccessKeyID, c.AccessKeySecret, c.SecurityToken, c.Expiration)
}

// WebIdentityAssumer calls AssumeRoleWithWebIdentity of the AWS STS query
// API, as served by AWS, MinIO and Ceph RGW. The call is unsigned; every
// parameter, the token among them, goes in a POST form body.
type WebIdentityAssumer struct {
	Endpoint    string // e.g. https://sts.eu-west-1.amazonaws.com or http://minio:9000
	RoleARN     string // may be empty for MinIO's claim-based policies
	SessionName string
	Duration    time.Duration // 0: STS default
	HTTP        *http.Client
}

// Action implements Assumer.
func (a *WebIdentityAssumer) Action() string { return WebIdentityAction }

// Assume implements Assumer.
func (a *WebIdentityAssumer) Assume(ctx context.Context, token string) (keys.Keys, error) {
	form := url.Values{
		"Action":           {WebIdentityAction},
		"Version":          {WebIdentityVersion},
		"RoleSessionName":  {a.SessionName},
		"WebIdentityToken": {token},
	}
	if a.RoleARN != "" {
		form.Set("RoleArn", a.RoleARN)
	}
	if a.Duration > 0 {
		form.Set("DurationSeconds", strconv.Itoa(int(a.Duration/time.Second)))
	}
	status, body, err := post(ctx, a.HTTP, WebIdentityAction, a.Endpoint, form)
	if err != nil {
		return keys.Keys{}, err
	}
	if status != http.StatusOK {
		var e struct {
			Error struct {
				Code    string `xml:"Code"`
				Message string `xml:"Message"`
			} `xml:"Error"`
			RequestID string `xml:"RequestId"`
		}
		_ = xml.Unmarshal(body, &e)
		return keys.Keys{}, &Error{Action: WebIdentityAction, StatusCode: status, Code: bounded(e.Error.Code, 128),
			Message: scrubToken(e.Error.Message, token), RequestID: bounded(e.RequestID, 128)}
	}
	var ok struct {
		Result struct {
			Credentials *struct {
				AccessKeyID     string `xml:"AccessKeyId"`
				SecretAccessKey string `xml:"SecretAccessKey"`
				SessionToken    string `xml:"SessionToken"`
				Expiration      string `xml:"Expiration"`
			} `xml:"Credentials"`
		} `xml:"AssumeRoleWithWebIdentityResult"`
	}
	if err := xml.Unmarshal(body, &ok); err != nil || ok.Result.Credentials == nil {
		return keys.Keys{}, fmt.Errorf("%w: %s answered HTTP 200 without Credentials", ErrResponse, WebIdentityAction)
	}
	c := ok.Result.Credentials
	return stsKeys(WebIdentityAction, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Expiration)
}

// post sends form and returns the status and a bounded body. Transport
// errors name the host and the failure, never the form.
func post(ctx context.Context, hc *http.Client, action, endpoint string, form url.Values) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, fmt.Errorf("sts: %s: bad endpoint: %w", action, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json, application/xml")
	if hc == nil {
		hc = &http.Client{Timeout: httpTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is known to the reader; keep the cause
		}
		return 0, nil, fmt.Errorf("sts: %s at %s: %w", action, req.URL.Host, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return 0, nil, fmt.Errorf("sts: %s at %s: read response: %w", action, req.URL.Host, err)
	}
	return resp.StatusCode, body, nil
}

func stsKeys(action, id, secret, token, expiration string) (keys.Keys, error) {
	k := keys.Keys{AccessKeyID: strings.TrimSpace(id), SecretAccessKey: strings.TrimSpace(secret), SessionToken: strings.TrimSpace(token)}
	if err := k.Validate(); err != nil {
		return keys.Keys{}, fmt.Errorf("%w: %s: %w", ErrResponse, action, err)
	}
	if expiration == "" {
		return keys.Keys{}, fmt.Errorf("%w: %s: no Expiration", ErrResponse, action)
	}
	exp, err := time.Parse(time.RFC3339, strings.TrimSpace(expiration))
	if err != nil {
		return keys.Keys{}, fmt.Errorf("%w: %s: Expiration is not an RFC 3339 time", ErrResponse, action)
	}
	k.Expiration = exp
	return k, nil
}

// scrubToken removes the token from an STS message, also in part: STS
// services echo the token, a JWT segment of it or a truncated prefix, URL
// encoded or glued to other text. Every run of token-like characters that
// shares tokenEcho or more characters with the token goes whole.
func scrubToken(msg, token string) string {
	if token != "" {
		msg = strings.ReplaceAll(msg, token, "[redacted]")
		var b strings.Builder
		run := func(r rune) bool {
			return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.=+/%~", r)
		}
		rs := []rune(msg)
		for i := 0; i < len(rs); {
			if !run(rs[i]) {
				b.WriteRune(rs[i])
				i++
				continue
			}
			j := i
			for j < len(rs) && run(rs[j]) {
				j++
			}
			word := string(rs[i:j])
			if echoes(word, token) {
				b.WriteString("[redacted]")
			} else {
				b.WriteString(word)
			}
			i = j
		}
		msg = b.String()
	}
	return bounded(msg, maxMessage)
}

// tokenEcho is how many characters in a row a message may share with the
// token before they count as an echo of it.
const tokenEcho = 8

// echoes reports whether word (URL-decoded too) shares tokenEcho
// characters in a row with token.
func echoes(word, token string) bool {
	for _, w := range []string{word, unescape(word)} {
		for i := 0; i+tokenEcho <= len(w); i++ {
			if strings.Contains(token, w[i:i+tokenEcho]) {
				return true
			}
		}
	}
	return false
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// bounded cuts s to at most n bytes and replaces control characters.
func bounded(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strings.TrimSpace(s)
}
