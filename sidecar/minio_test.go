package sidecar

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/internal/atomicwriter"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/sts"
	"rekey.dev/rekey/internal/sts/ststest"
)

// TestMinIOAssumeRoleWithWebIdentity exchanges tokens of a local OIDC
// issuer at a real MinIO STS, uses the keys against MinIO's S3 API, and
// runs the sidecar on an irsa source whose FUSE server validates keys
// against MinIO too.
func TestMinIOAssumeRoleWithWebIdentity(t *testing.T) {
	bin := ststest.MinIOBinary(t)
	iss := ststest.StartIssuer(t)
	m := ststest.StartMinIO(t, bin, iss)
	ctx := context.Background()
	root := m.Root()
	if _, err := m.S3(root).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("data")}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}

	src := contract.Source{VolumeID: "vol-minio", AuthType: contract.AuthTypeIRSA, STSEndpoint: m.URL}
	a, err := NewAssumer(src, "rekey-sidecar", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	m.WaitSTS(t, iss)

	t.Run("exchange and use", func(t *testing.T) {
		k, err := a.Assume(ctx, iss.Token(t, time.Hour, nil))
		if err != nil {
			t.Fatal(err)
		}
		if k.SessionToken == "" || k.Expiration.Before(time.Now().Add(14*time.Minute)) || k.Expiration.After(time.Now().Add(16*time.Minute)) {
			t.Errorf("keys %s expire at %v, want a session token and 15 minutes", k, k.Expiration)
		}
		_, err = m.S3(k).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("data"), Key: aws.String("hello"), Body: strings.NewReader("hi")})
		if err != nil {
			t.Errorf("put with STS keys: %v", err)
		}
	})

	t.Run("refused token", func(t *testing.T) {
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		tok := iss.Token(t, time.Hour, other)
		_, err := a.Assume(ctx, tok)
		var se *sts.Error
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
		if err := aw.WriteStrings(map[string]string{contract.SidecarTokenFile: iss.Token(t, time.Hour, nil)}); err != nil {
			t.Fatal(err)
		}
		bucket := newFakeBucket(root.AccessKeyID)
		bucket.check = func(ctx context.Context, k keys.Keys) error {
			_, err := m.S3(k).HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("data")})
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
