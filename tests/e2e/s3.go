package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
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
	rootPass := randHex(16)
	m := &MinIO{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", minioPort), Bucket: "e2e-bucket", mc: mc, mcDir: c.path("mc")}
	_, err = c.startEnv("minio", []string{"MINIO_ROOT_USER=" + minioRootUser, "MINIO_ROOT_PASSWORD=" + rootPass, "MINIO_BROWSER=off", "MINIO_UPDATE=off"},
		bin, "server", data, "--quiet", "--address", fmt.Sprintf("127.0.0.1:%d", minioPort), "--console-address", fmt.Sprintf("127.0.0.1:%d", minioPort+1))
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
	if _, err := m.run(ctx, "admin", "user", "add", "e2e", k.AccessKeyID, k.SecretAccessKey); err != nil {
		return keys.Keys{}, err
	}
	if _, err := m.run(ctx, "admin", "policy", "attach", "e2e", "readwrite", "--user", k.AccessKeyID); err != nil {
		return keys.Keys{}, err
	}
	return k, nil
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
