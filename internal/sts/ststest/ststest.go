// Package ststest runs a real STS for tests: a local OpenID provider that
// signs projected-service-account-like tokens, and a MinIO server (built by
// tests/s3servers/build-minio.sh, path in REKEY_MINIO_BIN) that trusts it
// and answers AssumeRoleWithWebIdentity with keys valid on its S3 API.
package ststest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/sts"
)

// ClientID is the OpenID client ID MinIO is configured with; tokens carry
// it as their audience, like a projected service-account token carries the
// audience its volume asks for.
const ClientID = "rekey-test"

// MinIOBinary returns the MinIO server built by
// tests/s3servers/build-minio.sh, or skips (fails under CI=true).
func MinIOBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("REKEY_MINIO_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("REKEY_MINIO_BIN is not set; build MinIO with tests/s3servers/build-minio.sh")
		}
		t.Skip("REKEY_MINIO_BIN is not set; run tests/s3servers/build-minio.sh to enable the MinIO STS tests")
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // the test runner's own setting
		t.Fatalf("REKEY_MINIO_BIN: %v", err)
	}
	return bin
}

// Issuer is an OpenID provider served by the test: discovery, JWKS, and
// RS256 tokens signed with stdlib crypto.
type Issuer struct {
	URL string
	key *rsa.PrivateKey
	kid string
}

// StartIssuer serves an Issuer until the test ends.
func StartIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	iss := &Issuer{key: key, kid: "rekey-test-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                iss.URL,
			"jwks_uri":                              iss.URL + "/openid/v1/jwks",
			"authorization_endpoint":                iss.URL + "/authorize",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "policy"},
		})
	})
	mux.HandleFunc("/openid/v1/jwks", func(w http.ResponseWriter, _ *http.Request) {
		pub := key.PublicKey
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": iss.kid,
			"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
		}}})
	})
	srv := httptest.NewUnstartedServer(mux)
	iss.URL = "http://" + srv.Listener.Addr().String() // before handlers can read it
	srv.Start()
	t.Cleanup(srv.Close)
	return iss
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Token returns a signed JWT shaped like a projected service-account token,
// with MinIO's policy claim. A nil signer signs with the issuer's key.
func (iss *Issuer) Token(t testing.TB, life time.Duration, signer *rsa.PrivateKey) string {
	t.Helper()
	if signer == nil {
		signer = iss.key
	}
	now := time.Now()
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": iss.kid})
	claims, _ := json.Marshal(map[string]any{
		"iss": iss.URL, "sub": "system:serviceaccount:default:app", "aud": []string{ClientID},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(life).Unix(), "policy": "readwrite",
		"jti": b64(randomBytes(t)), // two tokens of the same second differ
	})
	signing := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, signer, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

func randomBytes(t testing.TB) []byte {
	b := make([]byte, 9)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// FakeToken is a JWT-shaped token for tests against fake STS servers.
const FakeToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLXNlY3JldA" //nolint:gosec // a fake token for fake servers

// Alibaba is an httptest server that checks requests the way Alibaba Cloud
// STS documents AssumeRoleWithOIDC and answers like it: answer writes the
// response for the form the request carried.
func Alibaba(t testing.TB, answer func(w http.ResponseWriter, form url.Values)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		switch {
		case r.Method != http.MethodPost:
			t.Errorf("method %s, want POST", r.Method)
		case q.Get("Action") != "AssumeRoleWithOIDC" || q.Get("Version") != "2015-04-01" || q.Get("Format") != "JSON":
			t.Errorf("common parameters %v", q)
		case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
			t.Errorf("content type %q", r.Header.Get("Content-Type"))
		case strings.Contains(r.URL.String(), FakeToken[:20]):
			t.Errorf("token in the URL")
		}
		if _, err := time.Parse("2006-01-02T15:04:05Z", q.Get("Timestamp")); err != nil {
			t.Errorf("Timestamp %q is not ISO 8601 UTC", q.Get("Timestamp"))
		}
		for _, p := range []string{"RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"} {
			if form.Get(p) == "" {
				t.Errorf("form parameter %s missing", p)
			}
		}
		answer(w, form)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// MinIO is a MinIO server process for one test.
type MinIO struct {
	URL                string
	RootUser, RootPass string
}

// Root returns the root user's keys.
func (m *MinIO) Root() keys.Keys {
	return keys.Keys{AccessKeyID: m.RootUser, SecretAccessKey: m.RootPass}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// StartMinIO runs MinIO with iss as its OpenID provider until the test
// ends, and returns once it answers health checks.
func StartMinIO(t testing.TB, bin string, iss *Issuer) *MinIO {
	t.Helper()
	m := &MinIO{RootUser: "rekeyroot", RootPass: "rekeyroot-password"} //nolint:gosec // a throwaway test server
	port := freePort(t)
	m.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "server", "--quiet", "--address", fmt.Sprintf("127.0.0.1:%d", port),
		filepath.Join(t.TempDir(), "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.RootUser, "MINIO_ROOT_PASSWORD="+m.RootPass,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off",
		"MINIO_IDENTITY_OPENID_CONFIG_URL="+iss.URL+"/.well-known/openid-configuration",
		"MINIO_IDENTITY_OPENID_CLIENT_ID="+ClientID,
		"MINIO_IDENTITY_OPENID_CLAIM_NAME=policy",
		"MINIO_IDENTITY_OPENID_SCOPES=openid",
	)
	out, err := os.Create(filepath.Join(t.TempDir(), "minio.log"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start minio: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("minio output:\n%s", logText(out))
		}
		_ = out.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(m.URL + "/minio/health/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		select {
		case <-exited:
			t.Fatalf("minio exited:\n%s", logText(out))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("minio not ready after 60 s:\n%s", logText(out))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func logText(f *os.File) string {
	b, _ := os.ReadFile(f.Name())
	return string(b)
}

// WaitSTS waits until MinIO's STS grants keys for iss's tokens: MinIO
// answers /minio/health/ready before its IAM subsystem has loaded. Until
// then STS says 503 STSIAMNotInitialized, and for a moment after that 400
// "None of the given policies (`readwrite`) are defined" while the
// built-in policies load, so only a grant ends the wait.
func (m *MinIO) WaitSTS(t testing.TB, iss *Issuer) {
	t.Helper()
	a, err := sts.New(sts.Config{Kind: sts.KindIRSA, Endpoint: m.URL, SessionName: "rekey-wait"})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := a.Assume(context.Background(), iss.Token(t, time.Hour, nil))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MinIO STS not ready after 60 s: %v", err)
		}
	}
}

// S3 returns an S3 client of m signing with k.
func (m *MinIO) S3(k keys.Keys) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(m.URL), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}, nil
		}),
	})
}
