package s3fs

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"rekey.dev/rekey/internal/fusetest"
)

// TestSignalsDoNotFailCalls: a signal to an application thread waiting on
// the mount (Go sends its threads SIGURG for preemption many times a
// second) does not fail the call with EINTR, which Go's os package does
// not retry for several calls (Chtimes among them): the utimens waits for
// its one CopyObject, held back meanwhile, and succeeds. (The kernel turns such a signal into an
// INTERRUPT request; the mount answers it ENOSYS, so no request is ever
// cancelled: seen as "chtimes: interrupted system call" in
// TestVersityGW/RotationUnderLoad.)
func TestSignalsDoNotFailCalls(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, true)
	e.put("s", []byte("data"))
	if _, err := os.Stat(e.path("s")); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1_000_000_000, 0)
	before := e.fsys.RequestCounts()
	e.api.holdCopies.Lock()
	held := true
	defer func() {
		if held {
			e.api.holdCopies.Unlock()
		}
	}()
	tid := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		done <- os.Chtimes(e.path("s"), mtime, mtime)
	}()
	thread := <-tid
	for range 30 { // while the chmod waits for the held copy
		if err := unix.Tgkill(os.Getpid(), thread, unix.SIGURG); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("utimens returned (%v) while its CopyObject was held back", err)
	default:
	}
	e.api.holdCopies.Unlock()
	held = false
	if err := <-done; err != nil {
		t.Fatalf("utimens under signals: %v", err)
	}
	if got := fusetest.CountsSince(e.fsys.RequestCounts(), before)["CopyObject"]; got != 1 {
		t.Fatalf("%d CopyObject requests, want 1 (a cancelled one was retried)", got)
	}
	head, err := e.admin.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("s")})
	if err != nil {
		t.Fatal(err)
	}
	if got := head.Metadata["mtime"]; got != "1000000000" {
		t.Fatalf("x-amz-meta-mtime = %q, want 1000000000 (all: %v)", got, head.Metadata)
	}
}
