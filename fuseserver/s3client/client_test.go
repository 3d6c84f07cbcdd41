package s3client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/fuseserver/s3client"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

func startServer(t *testing.T) (*fakes3.Server, keys.Keys) {
	t.Helper()
	k := fakes3.NewKeys("AKINIT")
	srv, err := fakes3.Start(k, "bucket")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, k
}

func newClient(t *testing.T, endpoint, bucket string, k keys.Keys, timeout time.Duration) *s3client.Client {
	t.Helper()
	c, err := s3client.New(s3client.Config{Endpoint: endpoint, Bucket: bucket, PathStyle: true, ValidateTimeout: timeout}, k)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestValidate(t *testing.T) {
	srv, good := startServer(t)
	other := fakes3.NewKeys("AKOTHER")
	srv.AddKeys(other)
	wrongSecret := good
	wrongSecret.SecretAccessKey = "0123456789abcdef0123456789abcdef"

	// A listener that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
		}
	}()
	// A port with nothing listening.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "http://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name       string
		endpoint   string
		bucket     string
		keys       keys.Keys
		wantReason rotation.Reason
		wantInMsg  []string
	}{
		{"valid", srv.URL, "bucket", good, rotation.ReasonNone, nil},
		{"second valid key", srv.URL, "bucket", other, rotation.ReasonNone, nil},
		{"unknown access key", srv.URL, "bucket", fakes3.NewKeys("AKNOPE"), rotation.ReasonInvalidAccessKey,
			[]string{"invalid credentials", "host=" + srv.Host(), "code=InvalidAccessKeyId"}},
		{"wrong secret", srv.URL, "bucket", wrongSecret, rotation.ReasonSignatureMismatch,
			[]string{"signature mismatch", "code=SignatureDoesNotMatch"}},
		{"missing bucket", srv.URL, "nobucket", good, rotation.ReasonBucketNotFound,
			[]string{"bucket not found", "code=NoSuchBucket"}},
		{"connection refused", closedURL, "bucket", good, rotation.ReasonEndpointUnreachable,
			[]string{"endpoint unreachable", "connection refused"}},
		{"timeout", "http://" + silent.Addr().String(), "bucket", good, rotation.ReasonTimeout,
			[]string{"timeout after 300ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, tt.endpoint, tt.bucket, good, 300*time.Millisecond)
			err := c.Validate(context.Background(), tt.keys)
			if tt.wantReason == rotation.ReasonNone {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ref *rotation.RefusalError
			if !errors.As(err, &ref) {
				t.Fatalf("Validate error = %v, want *RefusalError", err)
			}
			if ref.Reason != tt.wantReason {
				t.Errorf("reason = %v, want %v (message %q)", ref.Reason, tt.wantReason, ref.Message)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(ref.Message, s) {
					t.Errorf("message %q lacks %q", ref.Message, s)
				}
			}
			if strings.Contains(ref.Message, tt.keys.SecretAccessKey) {
				t.Errorf("message leaks the secret: %q", ref.Message)
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "oss-cn-hangzhou.aliyuncs.com", want: "https://oss-cn-hangzhou.aliyuncs.com"},
		{in: "http://127.0.0.1:9000/", want: "http://127.0.0.1:9000"},
		{in: "", wantErr: "required"},
		{in: "ftp://x", wantErr: "scheme"},
		{in: "https://user:pw@host", wantErr: "user info"},
		{in: "https://host/?a=b", wantErr: "query"},
		{in: "https://host/#frag", wantErr: "fragment"},
		{in: "https://", wantErr: "no host"},
	}
	for _, tt := range tests {
		u, err := s3client.ParseEndpoint(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseEndpoint(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
}

// TestSwapWhileInFlight holds a request signed with the old keys in a proxy,
// swaps, revokes the old keys on the server, then releases the request: the
// server refuses it, and the client retries it with the new keys.
func TestSwapWhileInFlight(t *testing.T) {
	srv, oldKeys := startServer(t)
	setup := srv.Client(oldKeys)
	if _, err := setup.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String("bucket"), Key: aws.String("obj"), Body: strings.NewReader("payload"),
	}); err != nil {
		t.Fatal(err)
	}

	target, _ := url.Parse(srv.URL)
	arrived := make(chan struct{}, 4)
	release := make(chan struct{})
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/obj") {
			arrived <- struct{}{}
			<-release
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = proxy.Serve(ln) }()
	defer proxy.Close()

	c := newClient(t, "http://"+ln.Addr().String(), "bucket", oldKeys, time.Second)
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.API().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String("obj")})
		if err != nil {
			done <- result{err: err}
			return
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		done <- result{b, err}
	}()

	<-arrived // first attempt, signed with the old keys, is parked
	newKeys := fakes3.NewKeys("AKNEW")
	srv.AddKeys(newKeys)
	c.SetKeys(newKeys, 1)
	srv.RevokeKeys(oldKeys)
	close(release)

	r := <-done
	if r.err != nil {
		t.Fatalf("GetObject across the swap: %v", r.err)
	}
	if !bytes.Equal(r.body, []byte("payload")) {
		t.Fatalf("body = %q", r.body)
	}
	if len(arrived) != 1 {
		t.Fatalf("want exactly one retry, saw %d more attempts", len(arrived))
	}
}

// TestRevokedWithoutSwapFails checks that a genuine authentication failure
// (no swap happened) is returned, not retried forever.
func TestRevokedWithoutSwapFails(t *testing.T) {
	srv, k := startServer(t)
	c := newClient(t, srv.URL, "bucket", k, time.Second)
	srv.AddKeys(fakes3.NewKeys("AKKEEP"))
	srv.RevokeKeys(k)
	_, err := c.API().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("bucket")})
	if !s3client.IsAuthError(err) {
		t.Fatalf("err = %v, want an auth error", err)
	}
}

// TestNewSecretSameAccessKey swaps to a new secret for the same access key
// ID. The SDK's signer caches derived keys by access key ID only; without
// keySafeSigner the probe and the requests after the swap would be signed
// with the old secret.
func TestNewSecretSameAccessKey(t *testing.T) {
	srv, k := startServer(t)
	c := newClient(t, srv.URL, "bucket", k, time.Second)
	if _, err := c.API().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("bucket")}); err != nil {
		t.Fatal(err)
	}
	wrong := k
	wrong.SecretAccessKey = strings.Repeat("0", 40)
	if err := c.Validate(context.Background(), wrong); err == nil {
		t.Fatal("wrong secret validated")
	}
	fixed := k
	fixed.SecretAccessKey = "a-brand-new-secret-for-the-same-access-key"
	srv.AddKeys(fixed) // replaces the secret of the same access key ID
	if err := c.Validate(context.Background(), fixed); err != nil {
		t.Fatalf("Validate new secret: %v", err)
	}
	c.SetKeys(fixed, 1)
	if _, err := c.API().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("bucket")}); err != nil {
		t.Fatalf("request after swapping the secret: %v", err)
	}
}

// TestValidateRetriesBusyServer: a server that answers 503 SlowDown (or
// 500 InternalError) for a moment does not refuse keys: the probe asks
// again; one that keeps failing refuses them as an unreachable endpoint,
// which senders retry, never as bad keys.
func TestValidateRetriesBusyServer(t *testing.T) {
	srv, good := startServer(t)
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var failures atomic.Int32
	var code atomic.Value
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(-1) >= 0 {
			status := http.StatusServiceUnavailable
			if code.Load() == "InternalError" {
				status = http.StatusInternalServerError
			}
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>busy</Message></Error>`, code.Load())
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer busy.Close()

	for _, c := range []struct {
		code     string
		failures int32
		ok       bool
	}{{"SlowDown", 2, true}, {"InternalError", 1, true}, {"SlowDown", 100, false}} {
		code.Store(c.code)
		failures.Store(c.failures)
		err := newClient(t, busy.URL, "bucket", good, 5*time.Second).Validate(context.Background(), good)
		if c.ok {
			if err != nil {
				t.Errorf("%s %d times, then good: %v", c.code, c.failures, err)
			}
			continue
		}
		var ref *rotation.RefusalError
		if !errors.As(err, &ref) || ref.Reason != rotation.ReasonEndpointUnreachable || !strings.Contains(ref.Message, "code="+c.code) {
			t.Errorf("%s for good: %v, want an unreachable-endpoint refusal naming the code", c.code, err)
		}
	}
}
