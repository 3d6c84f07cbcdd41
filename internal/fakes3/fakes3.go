// Package fakes3 runs an in-process S3 server on 127.0.0.1 that checks real
// AWS Signature V4 and whose accepted keys can be added and revoked while it
// runs. Tests and `make demo` use it as the bucket; it is backed by
// github.com/rclone/gofakes3 with in-memory storage.
package fakes3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"

	"rekey.dev/rekey/internal/keys"
)

// Region is the region the server answers for.
const Region = "us-east-1"

// Server is a running in-process S3 server.
type Server struct {
	// URL is the endpoint, e.g. http://127.0.0.1:41234.
	URL string

	faker   *gofakes3.GoFakeS3
	http    *http.Server
	ln      net.Listener
	mu      sync.Mutex
	allowed map[string]bool
	closed  bool
}

// Start serves an S3 API on a free 127.0.0.1 port that accepts only the given
// keys (at least one is required so that signatures are checked) and creates
// the named buckets.
func Start(initial keys.Keys, buckets ...string) (*Server, error) {
	if initial.AccessKeyID == "" || initial.SecretAccessKey == "" {
		return nil, fmt.Errorf("fakes3: initial keys are required for V4 checking")
	}
	backend := s3mem.New()
	for _, b := range buckets {
		if err := backend.CreateBucket(context.Background(), b); err != nil {
			return nil, fmt.Errorf("fakes3: create bucket %s: %w", b, err)
		}
	}
	faker := gofakes3.New(backend,
		gofakes3.WithV4Auth(map[string]string{initial.AccessKeyID: initial.SecretAccessKey}),
		gofakes3.WithLogger(gofakes3.DiscardLog()),
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakes3: listen: %w", err)
	}
	s := &Server{
		URL:     "http://" + ln.Addr().String(),
		faker:   faker,
		http:    &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second},
		ln:      ln,
		allowed: map[string]bool{initial.AccessKeyID: true},
	}
	go func() { _ = s.http.Serve(ln) }()
	return s, nil
}

// Host is the host:port of the server.
func (s *Server) Host() string { return s.ln.Addr().String() }

// AddKeys makes the server accept k from now on.
func (s *Server) AddKeys(k keys.Keys) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allowed[k.AccessKeyID] = true
	s.faker.AddAuthKeys(map[string]string{k.AccessKeyID: k.SecretAccessKey})
}

// RevokeKeys makes the server refuse k (InvalidAccessKeyId) from now on.
// Revoking the last accepted key would switch gofakes3 to accept anything, so
// a random key that nobody knows stays registered instead.
func (s *Server) RevokeKeys(k keys.Keys) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.allowed, k.AccessKeyID)
	if len(s.allowed) == 0 {
		placeholder := NewKeys("PLACEHOLDER")
		s.allowed[placeholder.AccessKeyID] = true
		s.faker.AddAuthKeys(map[string]string{placeholder.AccessKeyID: placeholder.SecretAccessKey})
	}
	s.faker.DelAuthKeys([]string{k.AccessKeyID})
}

// Close stops the server.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.http.Shutdown(ctx)
}

// Client returns a plain path-style S3 client for the server signed with k,
// for tests that set up or inspect bucket contents directly.
func (s *Server) Client(k keys.Keys) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.URL),
		Region:       Region,
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}, nil
		}),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// NewKeys returns fresh random keys whose access key ID starts with prefix.
func NewKeys(prefix string) keys.Keys {
	id := make([]byte, 8)
	secret := make([]byte, 20)
	_, _ = rand.Read(id)
	_, _ = rand.Read(secret)
	return keys.Keys{
		AccessKeyID:     prefix + hex.EncodeToString(id),
		SecretAccessKey: hex.EncodeToString(secret),
	}
}
