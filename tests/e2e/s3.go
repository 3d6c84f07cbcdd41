package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"rekey.dev/rekey/internal/keys"
)

// MinIO is the S3 server on 127.0.0.1, managed like an operator does: `mc
// admin user add/remove` and `mc admin policy attach` make and revoke keys.
type MinIO struct {
	Endpoint string
	Bucket   string
	mc       string
	mcDir    string
}

const (
	minioPort     = 19000
	minioRootUser = "e2e-root"
	// stsAudience is MinIO's OpenID client ID: the audience of the tokens
	// kubelet passes for irsa volumes (CSIDriver tokenRequests).
	stsAudience = "sts.amazonaws.com"
	// stsRoleARN is the role MinIO derives for its role policy:
	// arn:minio:iam:<region>::role/<base64url(sha1(client ID))>, region "".
	stsRoleARN = "arn:minio:iam:::role/oxnUw3DAuQF1uggjXGxI2AmW8IA"
)

// startMinIO starts MinIO (tests/s3servers/build-minio.sh) on a fresh
// directory and creates the bucket.
func startMinIO(ctx context.Context, c *Cluster, repo string) (*MinIO, error) {
	bin, err := output(ctx, repo, "tests/s3servers/build-minio.sh")
	if err != nil {
		return nil, err
	}
	mc, err := output(ctx, repo, "tests/s3servers/build-mc.sh")
	if err != nil {
		return nil, err
	}
	data := c.path("minio")
	_ = os.RemoveAll(data)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	// MinIO's STS (AssumeRoleWithWebIdentity) trusts the cluster's
	// service-account issuer: OpenID discovery at the API server (over TLS:
	// the cluster CA in MinIO's certs/CAs), tokens for the audience
	// sts.amazonaws.com (the client ID), every such token gets the policy
	// readwrite through the role stsRoleARN. Kubernetes tokens carry no
	// policy claim, hence a role policy rather than MinIO's claim name.
	certs := c.path("minio-certs")
	_ = os.RemoveAll(certs)
	if err := os.MkdirAll(filepath.Join(certs, "CAs"), 0o700); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(certs, "CAs", "kubernetes-ca.crt"), ca, 0o600); err != nil { //nolint:gosec // our own temp directory
		return nil, err
	}
	rootPass := randHex(16)
	m := &MinIO{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", minioPort), Bucket: "e2e-bucket", mc: mc, mcDir: c.path("mc")}
	_, err = c.startEnv("minio", []string{"MINIO_ROOT_USER=" + minioRootUser, "MINIO_ROOT_PASSWORD=" + rootPass, "MINIO_BROWSER=off", "MINIO_UPDATE=off",
		fmt.Sprintf("MINIO_IDENTITY_OPENID_CONFIG_URL=https://127.0.0.1:%d/.well-known/openid-configuration", c.APIPort),
		"MINIO_IDENTITY_OPENID_CLIENT_ID=" + stsAudience, "SSL_CERT_FILE=" + filepath.Join(certs, "CAs", "kubernetes-ca.crt"), "MINIO_IDENTITY_OPENID_ROLE_POLICY=readwrite"},
		bin, "server", data, "--quiet", "--certs-dir", certs, "--address", fmt.Sprintf("127.0.0.1:%d", minioPort), "--console-address", fmt.Sprintf("127.0.0.1:%d", minioPort+1))
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 60*time.Second, "MinIO", func() error {
		_, err := m.run(ctx, "alias", "set", "e2e", m.Endpoint, minioRootUser, rootPass)
		if err != nil {
			return err
		}
		_, err = m.run(ctx, "admin", "info", "e2e")
		return err
	}); err != nil {
		return nil, err
	}
	if _, err := m.run(ctx, "mb", "e2e/"+m.Bucket); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *MinIO) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, m.mc, append([]string{"--config-dir", m.mcDir, "--no-color", "--quiet"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mc %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Issue creates a MinIO user with read/write access and returns its keys.
func (m *MinIO) Issue(ctx context.Context) (keys.Keys, error) {
	k := keys.Keys{AccessKeyID: "E2E" + strings.ToUpper(randHex(8)), SecretAccessKey: randHex(20)}
	return k, m.IssueKeys(ctx, k)
}

// IssueKeys creates a MinIO user with read/write access and the given keys
// (those tests/e2e/apps puts into the Secrets).
func (m *MinIO) IssueKeys(ctx context.Context, k keys.Keys) error {
	if _, err := m.run(ctx, "admin", "user", "add", "e2e", k.AccessKeyID, k.SecretAccessKey); err != nil {
		return err
	}
	_, err := m.run(ctx, "admin", "policy", "attach", "e2e", "readwrite", "--user", k.AccessKeyID)
	return err
}

// Revoke removes the user: MinIO refuses its keys from now on.
func (m *MinIO) Revoke(ctx context.Context, k keys.Keys) error {
	_, err := m.run(ctx, "admin", "user", "rm", "e2e", k.AccessKeyID)
	return err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
