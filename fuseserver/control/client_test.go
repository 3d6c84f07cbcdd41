package control_test

import (
	"os"
	"testing"
	"time"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
)

// TestClient drives a real server through the typed Client: the outcomes,
// the status and the report come back in the domain types, and the
// request crosses the socket with every key field.
func TestClient(t *testing.T) {
	e := start(t, selfUID())
	c, err := control.NewClient(e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx := rpcContext(t)

	exp := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	b := keys.Keys{AccessKeyID: "AKIDB", SecretAccessKey: "secretB", SessionToken: "tokenB", Expiration: exp}
	out, err := c.Swap(ctx, rotation.Request{Keys: b, Source: "secret", Generation: 5})
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != rotation.ResultApplied || out.Generation != 5 || out.Fingerprint != b.Fingerprint() || out.Source != "secret" {
		t.Fatalf("Swap = %+v", out)
	}
	if k, gen := e.app.get(); !k.Equal(b) || gen != 5 || !k.Expiration.Equal(exp) || k.SessionToken != "tokenB" {
		t.Fatalf("server applied %v generation %d", k, gen)
	}
	// Replaying the keys the swap replaced is stale, whatever the generation.
	out, err = c.Swap(ctx, rotation.Request{Keys: initialKeys, Source: "csi-republish", Generation: 6})
	if err != nil || out.Result != rotation.ResultStale || out.Fingerprint != b.Fingerprint() {
		t.Fatalf("replay = %+v, %v; want stale on b", out, err)
	}
	e.val.refuse(&rotation.RefusalError{Reason: rotation.ReasonEndpointUnreachable, Message: "endpoint unreachable (host=h:443)"})
	out, err = c.Swap(ctx, rotation.Request{Keys: keys.Keys{AccessKeyID: "AKIDC", SecretAccessKey: "secretC"}, Source: "secret", Generation: 7})
	if err != nil || out.Result != rotation.ResultRefused || out.Reason != rotation.ReasonEndpointUnreachable || !control.TransientRefusal(out.Reason) {
		t.Fatalf("refusal = %+v, %v", out, err)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.VolumeID != testIdentity.VolumeID || st.Bucket != testIdentity.Bucket || st.Fingerprint != b.Fingerprint() ||
		st.Generation != 5 || !st.Expiration.Equal(exp) || st.PID != int32(os.Getpid()) ||
		st.Last.Result != rotation.ResultRefused || st.LastApplied.Result != rotation.ResultApplied || st.LastApplied.Source != "secret" {
		t.Fatalf("Status = %+v", st)
	}
	if err := c.Report(ctx, testIdentity.VolumeID, "rrsa", "sts refused the token"); err != nil {
		t.Fatal(err)
	}
	err = c.Report(ctx, "another-volume", "rrsa", "x")
	if err == nil || control.Retryable(err) || control.Code(err) != "InvalidArgument" {
		t.Fatalf("report to the wrong volume: %v (code %s), want a final InvalidArgument", err, control.Code(err))
	}
}

// TestClientRetryable: a socket nobody serves is an error to retry, a
// request the server refuses to parse is not.
func TestClientRetryable(t *testing.T) {
	c, err := control.NewClient(shortSocketPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_, err = c.Status(rpcContext(t))
	if err == nil || !control.Retryable(err) {
		t.Fatalf("Status of a missing server = %v, want a retryable error", err)
	}

	e := start(t, selfUID())
	c2, err := control.NewClient(e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c2.Close() }()
	_, err = c2.Swap(rpcContext(t), rotation.Request{Keys: keys.Keys{AccessKeyID: "A B", SecretAccessKey: "s"}, Source: "secret"})
	if err == nil || control.Retryable(err) {
		t.Fatalf("Swap of malformed keys = %v, want a final error", err)
	}
}
