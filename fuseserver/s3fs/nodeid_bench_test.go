package s3fs

import (
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"

	"rekey.dev/rekey/internal/fusetest"
)

// BenchmarkReaddirPlus10k lists a directory of 10,000 objects through a
// fresh mount: one READDIRPLUS reply per ~25 entries, and one new node
// (number, go-fuse inode, node table bookkeeping) per entry. The listing
// cache is filled before the clock starts, so what is measured is the
// FUSE side of the listing, not the S3 listing. ns/entry is the cost of
// one entry.
func BenchmarkReaddirPlus10k(b *testing.B) {
	const n = 10000
	backend := s3mem.New()
	ctx := b.Context()
	if err := backend.CreateBucket(ctx, testBucket); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := backend.PutObject(ctx, testBucket, fmt.Sprintf("big/entry-%05d.dat", i), nil, strings.NewReader("x"), 1); err != nil {
			b.Fatal(err)
		}
	}
	hs := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	b.Cleanup(hs.Close)
	api := s3.New(s3.Options{
		BaseEndpoint: aws.String(hs.URL),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  aws.AnonymousCredentials{},
	})
	staging := b.TempDir()
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		fsys, err := New(api, Options{Bucket: testBucket, StagingDir: staging})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fsys.listDir(ctx, "big/"); err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		srv, err := Mount(dir, fsys, false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := os.Stat(dir + "/big"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		ents, err := os.ReadDir(dir + "/big")
		b.StopTimer()
		if err != nil || len(ents) != n {
			b.Fatalf("ReadDir: %d entries, %v", len(ents), err)
		}
		fusetest.Unmount(b, srv)
		_ = fsys.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
}
