package sidecar

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/internal/atomicwriter"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// minioClientID is the OpenID client ID MinIO is configured with; tokens
// carry it as their audience, like a projected service-account token
// carries the audience its volume asks for.
const minioClientID = "rekey-test"

// minioBinary returns the MinIO server built by
// tests/s3servers/build-minio.sh, or skips (fails under CI=true).
func minioBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("REKEY_MINIO_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("REKEY_MINIO_BIN is not set; build MinIO with tests/s3servers/build-minio.sh")
		}
		t.Skip("REKEY_MINIO_BIN is not set; run tests/s3servers/build-minio.sh to enable the MinIO STS tests")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("REKEY_MINIO_BIN: %v", err)
	}
	return bin
}

// oidcIssuer is an OpenID provider served by the test: discovery, JWKS,
// and RS256 tokens signed with stdlib crypto.
type oidcIssuer struct {
	URL string
	key *rsa.PrivateKey
	kid string
}

func startIssuer(t *testing.T) *oidcIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	iss := &oidcIssuer{key: key, kid: "rekey-test-1"}
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

// token returns a signed JWT shaped like a projected service-account token,
// with MinIO's policy claim. A nil signer key signs with iss's key.
func (iss *oidcIssuer) token(t *testing.T, life time.Duration, signer *rsa.PrivateKey) string {
	t.Helper()
	if signer == nil {
		signer = iss.key
	}
	now := time.Now()
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": iss.kid})
	claims, _ := json.Marshal(map[string]any{
		"iss": iss.URL, "sub": "system:serviceaccount:default:app", "aud": []string{minioClientID},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(life).Unix(), "policy": "readwrite",
	})
	signing := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, signer, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

// minio is a MinIO server process for one test.
type minio struct {
	URL                string
	rootUser, rootPass string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for the process's writers and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startMinIO(t *testing.T, bin string, iss *oidcIssuer) *minio {
	t.Helper()
	m := &minio{rootUser: "rekeyroot", rootPass: "rekeyroot-password"}
	port := freePort(t)
	m.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "server", "--quiet", "--address", fmt.Sprintf("127.0.0.1:%d", port),
		filepath.Join(t.TempDir(), "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.rootUser, "MINIO_ROOT_PASSWORD="+m.rootPass,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off",
		"MINIO_IDENTITY_OPENID_CONFIG_URL="+iss.URL+"/.well-known/openid-configuration",
		"MINIO_IDENTITY_OPENID_CLIENT_ID="+minioClientID,
		"MINIO_IDENTITY_OPENID_CLAIM_NAME=policy",
		"MINIO_IDENTITY_OPENID_SCOPES=openid",
	)
	out := &syncBuffer{}
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
			t.Logf("minio output:\n%s", out.String())
		}
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
			t.Fatalf("minio exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("minio not ready after 60 s:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *minio) s3(k keys.Keys) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(m.URL), Region: "us-east-1", UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}, nil
		}),
	})
}

// TestMinIOAssumeRoleWithWebIdentity exchanges tokens of a local OIDC
// issuer at a real MinIO STS, uses the keys against MinIO's S3 API, and
// runs the sidecar on an irsa source whose FUSE server validates keys
// against MinIO too.
func TestMinIOAssumeRoleWithWebIdentity(t *testing.T) {
	bin := minioBinary(t)
	iss := startIssuer(t)
	m := startMinIO(t, bin, iss)
	ctx := context.Background()
	root := keys.Keys{AccessKeyID: m.rootUser, SecretAccessKey: m.rootPass}
	if _, err := m.s3(root).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("data")}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}

	src := contract.Source{VolumeID: "vol-minio", AuthType: contract.AuthTypeIRSA, STSEndpoint: m.URL}
	a, err := NewAssumer(src, "rekey-sidecar", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	// MinIO answers /minio/health/ready before its IAM subsystem has
	// loaded; STS says 503 STSIAMNotInitialized until then.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := a.Assume(ctx, iss.token(t, time.Hour, nil))
		var stsErr *STSError
		if err == nil || !errors.As(err, &stsErr) || !stsErr.Temporary() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MinIO STS not ready after 60 s: %v", err)
		}
	}

	t.Run("exchange and use", func(t *testing.T) {
		k, err := a.Assume(ctx, iss.token(t, time.Hour, nil))
		if err != nil {
			t.Fatal(err)
		}
		if k.SessionToken == "" || k.Expiration.Before(time.Now().Add(14*time.Minute)) || k.Expiration.After(time.Now().Add(16*time.Minute)) {
			t.Errorf("keys %s expire at %v, want a session token and 15 minutes", k, k.Expiration)
		}
		_, err = m.s3(k).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("data"), Key: aws.String("hello"), Body: strings.NewReader("hi")})
		if err != nil {
			t.Errorf("put with STS keys: %v", err)
		}
	})

	t.Run("refused token", func(t *testing.T) {
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		tok := iss.token(t, time.Hour, other)
		_, err := a.Assume(ctx, tok)
		var se *STSError
		if !errors.As(err, &se) || se.Temporary() || se.StatusCode != 400 {
			t.Fatalf("err = %v, want a definitive refusal", err)
		}
		if strings.Contains(err.Error(), tok) {
			t.Errorf("error leaks the token")
		}
		t.Logf("MinIO refused a forged token: %v", err)
	})

	t.Run("sidecar", func(t *testing.T) {
		sockDir := shortDir(t)
		tokenDir := t.TempDir()
		aw, _ := atomicwriter.New(tokenDir)
		if err := aw.WriteStrings(map[string]string{contract.SidecarTokenFile: iss.token(t, time.Hour, nil)}); err != nil {
			t.Fatal(err)
		}
		bucket := newFakeBucket(root.AccessKeyID)
		bucket.check = func(ctx context.Context, k keys.Keys) error {
			_, err := m.s3(k).HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("data")})
			return err
		}
		srv := startFakeServer(t, filepath.Join(sockDir, "m.sock"), src.VolumeID, root, bucket, 1)
		src := src
		src.TokenFile = filepath.Join(tokenDir, contract.SidecarTokenFile)
		events, health := runSidecar(t, Config{SocketDir: sockDir, Sources: []contract.Source{src}, STSDuration: 15 * time.Minute})
		ev := nextSwap(t, events)
		if ev.Result != "applied" {
			t.Fatalf("swap = %+v", ev)
		}
		if st := srv.m.Status(); st.Expiration.IsZero() || st.Fingerprint != ev.Fingerprint {
			t.Errorf("server status %+v", st)
		}
		waitReady(t, health, true)
	})
}
