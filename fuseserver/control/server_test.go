package control_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

func TestSwapResultsOverTheWire(t *testing.T) {
	e := start(t, selfUID())
	ctx := rpcContext(t)
	a := keys.Keys{AccessKeyID: "AKIDA", SecretAccessKey: "secretA"}
	b := keys.Keys{AccessKeyID: "AKIDB", SecretAccessKey: "secretB", SessionToken: "tokenB",
		Expiration: time.Now().Add(time.Hour).Truncate(time.Second).UTC()}
	c := keys.Keys{AccessKeyID: "AKIDC", SecretAccessKey: "secretC"}
	swap := func(k keys.Keys, gen uint64) *credentialsv1.SwapRequest {
		req := &credentialsv1.SwapRequest{AccessKeyId: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
			SessionToken: k.SessionToken, Source: "secret", Generation: gen}
		if !k.Expiration.IsZero() {
			req.Expiration = timestamppb.New(k.Expiration)
		}
		return req
	}
	refusal := &rotation.RefusalError{Reason: rotation.ReasonSignatureMismatch,
		Message: "signature mismatch (host=s3.example.com:443, code=SignatureDoesNotMatch)"}

	steps := []struct {
		name    string
		refuse  error
		req     *credentialsv1.SwapRequest
		want    *credentialsv1.SwapResponse
		applied keys.Keys // what the applier holds afterwards
	}{
		{"applied, next generation", nil, swap(a, 0),
			&credentialsv1.SwapResponse{Result: credentialsv1.SwapResult_SWAP_RESULT_APPLIED, Message: "applied", Generation: 1, Fingerprint: a.Fingerprint()}, a},
		{"unchanged", nil, swap(a, 0),
			&credentialsv1.SwapResponse{Result: credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED, Message: "keys already in use", Generation: 1, Fingerprint: a.Fingerprint()}, a},
		{"applied, explicit generation with token and expiry", nil, swap(b, 5),
			&credentialsv1.SwapResponse{Result: credentialsv1.SwapResult_SWAP_RESULT_APPLIED, Message: "applied", Generation: 5, Fingerprint: b.Fingerprint()}, b},
		{"stale", nil, swap(c, 3),
			&credentialsv1.SwapResponse{Result: credentialsv1.SwapResult_SWAP_RESULT_STALE, Message: "stale generation 3, current is 5", Generation: 5, Fingerprint: b.Fingerprint()}, b},
		{"refused", refusal, swap(c, 6),
			&credentialsv1.SwapResponse{Result: credentialsv1.SwapResult_SWAP_RESULT_REFUSED, Reason: credentialsv1.SwapReason_SWAP_REASON_SIGNATURE_MISMATCH,
				Message: refusal.Message, Generation: 5, Fingerprint: b.Fingerprint()}, b},
		{"refused, expired", nil, swap(keys.Keys{AccessKeyID: "AKIDD", SecretAccessKey: "secretD", Expiration: time.Unix(0, 0).UTC()}, 7),
			&credentialsv1.SwapResponse{Result: credentialsv1.SwapResult_SWAP_RESULT_REFUSED, Reason: credentialsv1.SwapReason_SWAP_REASON_EXPIRED_TOKEN,
				Message: "keys expired at 1970-01-01T00:00:00Z", Generation: 5, Fingerprint: b.Fingerprint()}, b},
	}
	for _, s := range steps {
		e.val.refuse(s.refuse)
		got, err := e.client.Swap(ctx, s.req)
		if err != nil {
			t.Fatalf("%s: Swap: %v", s.name, err)
		}
		if got.GetResult() != s.want.Result || got.GetReason() != s.want.Reason || got.GetMessage() != s.want.Message ||
			got.GetGeneration() != s.want.Generation || got.GetFingerprint() != s.want.Fingerprint {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
		if k, _ := e.app.get(); !k.Equal(s.applied) {
			t.Errorf("%s: applier holds %v, want %v", s.name, k, s.applied)
		}
	}
	if k, gen := e.app.get(); !k.Equal(b) || gen != 5 || k.SessionToken != "tokenB" || !k.Expiration.Equal(b.Expiration) {
		t.Errorf("applier holds %v generation %d (expiry %v), want %v generation 5 (expiry %v)", k, gen, k.Expiration, b, b.Expiration)
	}
}

func TestStatus(t *testing.T) {
	e := start(t, selfUID())
	ctx := rpcContext(t)
	before := time.Now()

	st, err := e.client.Status(ctx, &credentialsv1.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	want := &credentialsv1.StatusResponse{
		VolumeId: testIdentity.VolumeID, Bucket: testIdentity.Bucket, Prefix: testIdentity.Prefix,
		AuthType: testIdentity.AuthType, SecretRef: testIdentity.SecretRef, RoleArn: testIdentity.RoleARN,
		Fingerprint: initialKeys.Fingerprint(), Pid: int32(os.Getpid()),
	}
	if st.GetVolumeId() != want.VolumeId || st.GetBucket() != want.Bucket || st.GetPrefix() != want.Prefix ||
		st.GetAuthType() != want.AuthType || st.GetSecretRef() != want.SecretRef || st.GetRoleArn() != want.RoleArn ||
		st.GetFingerprint() != want.Fingerprint || st.GetPid() != want.Pid || st.GetGeneration() != 0 {
		t.Errorf("Status = %v, want %v", st, want)
	}
	if st.GetLastSwap() != nil || st.GetExpiration() != nil {
		t.Errorf("Status before any swap has last_swap %v, expiration %v; want both unset", st.GetLastSwap(), st.GetExpiration())
	}
	if started := st.GetStartedAt().AsTime(); started.IsZero() || started.After(before) {
		t.Errorf("started_at = %v, want a time before %v", started, before)
	}

	exp := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	k := keys.Keys{AccessKeyID: "AKIDSTS", SecretAccessKey: "stsSecret", SessionToken: "stsToken", Expiration: exp}
	if _, err := e.client.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
		SessionToken: k.SessionToken, Expiration: timestamppb.New(exp), Source: "rrsa"}); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	e.val.refuse(&rotation.RefusalError{Reason: rotation.ReasonAccessDenied, Message: "access denied (host=h:443, code=AccessDenied)"})
	if _, err := e.client.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: "AKIDX", SecretAccessKey: "x", Source: "csi-republish"}); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	st, err = e.client.Status(ctx, &credentialsv1.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.GetFingerprint() != k.Fingerprint() || st.GetGeneration() != 1 || !st.GetExpiration().AsTime().Equal(exp) {
		t.Errorf("after swaps: fingerprint %q generation %d expiration %v; want %q 1 %v",
			st.GetFingerprint(), st.GetGeneration(), st.GetExpiration().AsTime(), k.Fingerprint(), exp)
	}
	last := st.GetLastSwap()
	if last.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_REFUSED || last.GetReason() != credentialsv1.SwapReason_SWAP_REASON_ACCESS_DENIED ||
		last.GetMessage() != "access denied (host=h:443, code=AccessDenied)" || last.GetSource() != "csi-republish" ||
		!last.GetTime().AsTime().Equal(time.Unix(0, 1)) { // the Manager's clock in these tests
		t.Errorf("last_swap = %v, want the refused csi-republish swap", last)
	}
	if applied := st.GetLastApplied(); applied.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED ||
		applied.GetSource() != "rrsa" || applied.GetTime().AsTime().After(last.GetTime().AsTime()) {
		t.Errorf("last_applied = %v, want the applied rrsa swap", applied)
	}
}

func TestReportReachesEvents(t *testing.T) {
	e := start(t, selfUID())
	_, err := e.client.Report(rpcContext(t), &credentialsv1.ReportRequest{
		VolumeId: testIdentity.VolumeID, Source: "rrsa", Reason: "sts: AssumeRoleWithOIDC refused\nthe token\x00",
	})
	if err != nil {
		t.Fatalf("Report: %v", err)
	}
	select {
	case ev := <-e.mgr.Events():
		want := rotation.Event{Kind: rotation.EventReported, VolumeID: testIdentity.VolumeID,
			Reason: "sts: AssumeRoleWithOIDC refused the token", Source: "rrsa", Fingerprint: initialKeys.Fingerprint()}
		if ev.Kind != want.Kind || ev.VolumeID != want.VolumeID || ev.Reason != want.Reason || ev.Source != want.Source || ev.Fingerprint != want.Fingerprint {
			t.Errorf("event = %+v, want %+v", ev, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event after Report")
	}
}

// TestWatchEvents follows the event stream across a reconnect: events
// recorded before the first watch arrive, a watcher resuming after the
// last sequence it handled gets exactly the later ones, live events
// arrive as they happen, and stopping the server ends open streams.
func TestWatchEvents(t *testing.T) {
	e := start(t, selfUID())
	report := func(reason string) {
		t.Helper()
		if _, err := e.client.Report(rpcContext(t), &credentialsv1.ReportRequest{VolumeId: testIdentity.VolumeID,
			Source: "rrsa", Reason: reason}); err != nil {
			t.Fatalf("Report: %v", err)
		}
	}
	recv := func(stream credentialsv1.CredentialService_WatchEventsClient) *credentialsv1.Event {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		return resp.GetEvent()
	}
	report("one")
	report("two")

	ctx, cancel := context.WithCancel(rpcContext(t))
	stream, err := e.client.WatchEvents(ctx, &credentialsv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"one", "two"} {
		ev := recv(stream)
		if ev.GetSequence() != uint64(i+1) || ev.GetReason() != want || ev.GetKind() != credentialsv1.EventKind_EVENT_KIND_REPORTED ||
			ev.GetVolumeId() != testIdentity.VolumeID || ev.GetSource() != "rrsa" || ev.GetTime() == nil {
			t.Errorf("event %d = %v", i, ev)
		}
	}
	cancel() // the watcher goes away after handling sequence 2

	report("three") // while nobody watches
	stream, err = e.client.WatchEvents(rpcContext(t), &credentialsv1.WatchEventsRequest{AfterSequence: 2})
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(stream); ev.GetSequence() != 3 || ev.GetReason() != "three" {
		t.Errorf("after reconnect: %v, want sequence 3", ev)
	}
	newKeys := keys.Keys{AccessKeyID: "AKIDNEW", SecretAccessKey: "newSecretValue0"}
	if _, err := e.client.Swap(rpcContext(t), &credentialsv1.SwapRequest{AccessKeyId: newKeys.AccessKeyID,
		SecretAccessKey: newKeys.SecretAccessKey, Source: "secret"}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(stream); ev.GetSequence() != 4 || ev.GetKind() != credentialsv1.EventKind_EVENT_KIND_APPLIED ||
		ev.GetFingerprint() != newKeys.Fingerprint() || ev.GetGeneration() != 1 {
		t.Errorf("live event = %v, want the applied swap as sequence 4", ev)
	}
	if strings.Contains(e.logs.String(), newKeys.SecretAccessKey) {
		t.Error("the log holds a secret key")
	}

	// A sequence from an earlier server process: everything retained.
	stream, err = e.client.WatchEvents(rpcContext(t), &credentialsv1.WatchEventsRequest{AfterSequence: 99})
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(stream); ev.GetSequence() != 1 {
		t.Errorf("after an unknown sequence: %v, want sequence 1", ev)
	}
}

// TestStopEndsWatch stops a server with an event stream open: Serve
// returns at once, not after the grace period, and the stream ends.
func TestStopEndsWatch(t *testing.T) {
	path := shortSocketPath(t)
	logs := &logBuffer{}
	lis := listen(t, path, selfUID(), logs)
	m := rotation.New(testIdentity, initialKeys, &fakeValidator{}, &fakeApplier{}, rotation.Options{})
	srv := control.NewServer(m, control.Options{Log: logs.logger(), GracePeriod: 30 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	stream, err := dial(t, path).WatchEvents(rpcContext(t), &credentialsv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Report("rrsa", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve waited for the open event stream")
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("the stream is still open")
	}
	t.Logf("stopped in %v with a stream open", time.Since(start))
}

func TestInvalidArgument(t *testing.T) {
	const value = "VaLuE" // must never come back in an error
	valid := func() *credentialsv1.SwapRequest {
		return &credentialsv1.SwapRequest{AccessKeyId: "AKID" + value, SecretAccessKey: "sk" + value, Source: "secret"}
	}
	swaps := []struct {
		name, field string
		edit        func(*credentialsv1.SwapRequest)
	}{
		{"missing access key ID", "access_key_id", func(r *credentialsv1.SwapRequest) { r.AccessKeyId = "" }},
		{"space in access key ID", "access_key_id", func(r *credentialsv1.SwapRequest) { r.AccessKeyId = "AK " + value }},
		{"long access key ID", "access_key_id", func(r *credentialsv1.SwapRequest) { r.AccessKeyId = strings.Repeat(value, 100) }},
		{"missing secret", "secret_access_key", func(r *credentialsv1.SwapRequest) { r.SecretAccessKey = "" }},
		{"control character in secret", "secret_access_key", func(r *credentialsv1.SwapRequest) { r.SecretAccessKey = value + "\x7f" }},
		{"non-ASCII token", "session_token", func(r *credentialsv1.SwapRequest) { r.SessionToken = value + "é" }},
		{"long token", "session_token", func(r *credentialsv1.SwapRequest) { r.SessionToken = strings.Repeat(value, 4000) }},
		{"bad expiration", "expiration", func(r *credentialsv1.SwapRequest) { r.Expiration = &timestamppb.Timestamp{Seconds: -1 << 60} }},
		{"missing source", "source", func(r *credentialsv1.SwapRequest) { r.Source = "" }},
		{"bad source", "source", func(r *credentialsv1.SwapRequest) { r.Source = "x/" + value }},
		{"long source", "source", func(r *credentialsv1.SwapRequest) { r.Source = strings.Repeat(value, 20) }},
	}
	reports := []struct {
		name, field string
		req         *credentialsv1.ReportRequest
	}{
		{"missing volume", "volume_id", &credentialsv1.ReportRequest{Source: "rrsa", Reason: "r"}},
		{"other volume", "volume_id", &credentialsv1.ReportRequest{VolumeId: "pv-" + value, Source: "rrsa", Reason: "r"}},
		{"missing source", "source", &credentialsv1.ReportRequest{VolumeId: testIdentity.VolumeID, Reason: "r"}},
		{"bad source", "source", &credentialsv1.ReportRequest{VolumeId: testIdentity.VolumeID, Source: value + " x", Reason: "r"}},
		{"empty reason after cleaning", "reason", &credentialsv1.ReportRequest{VolumeId: testIdentity.VolumeID, Source: "rrsa", Reason: " \n\t\x00 "}},
		{"long reason", "reason", &credentialsv1.ReportRequest{VolumeId: testIdentity.VolumeID, Source: "rrsa", Reason: strings.Repeat("r", rotation.MaxReasonLen+1)}},
	}

	e := start(t, selfUID())
	ctx := rpcContext(t)
	check := func(name, field string, err error) {
		t.Helper()
		st, _ := status.FromError(err)
		switch {
		case err == nil:
			t.Errorf("%s: no error, want InvalidArgument", name)
		case st.Code() != codes.InvalidArgument:
			t.Errorf("%s: code %v (%v), want InvalidArgument", name, st.Code(), err)
		case !strings.Contains(st.Message(), field+":"):
			t.Errorf("%s: message %q does not name field %s", name, st.Message(), field)
		case strings.Contains(st.Message(), value):
			t.Errorf("%s: message %q echoes the value", name, st.Message())
		}
	}
	for _, c := range swaps {
		req := valid()
		c.edit(req)
		_, err := e.client.Swap(ctx, req)
		check("Swap: "+c.name, c.field, err)
	}
	for _, c := range reports {
		_, err := e.client.Report(ctx, c.req)
		check("Report: "+c.name, c.field, err)
	}
	if n := e.val.callCount(); n != 0 {
		t.Errorf("validator called %d times for invalid requests, want 0", n)
	}
	select {
	case ev := <-e.mgr.Events():
		t.Errorf("invalid request produced event %+v", ev)
	default:
	}
	// A valid request still works on the same connection.
	if resp, err := e.client.Swap(ctx, valid()); err != nil || resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		t.Errorf("valid Swap = %v, %v; want applied", resp, err)
	}
}

// TestNoSecretsInLogsOrAnswers fails if a secret sent in a Swap appears in
// anything logged or answered, for applied, refused and invalid swaps.
func TestNoSecretsInLogsOrAnswers(t *testing.T) {
	e := start(t, selfUID())
	ctx := rpcContext(t)
	secrets := []string{"SeCrEtApPlIeD", "ToKeNaPpLiEd", "SeCrEtReFuSeD", "ToKeNrEfUsEd", "SeCrEtInVaLiD", "ToKeNiNvAlId"}
	var answers []string
	record := func(resp interface{ String() string }, err error) {
		if err != nil {
			answers = append(answers, err.Error())
		}
		answers = append(answers, resp.String())
	}

	resp, err := e.client.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: "AKIDAPPLIED", SecretAccessKey: secrets[0], SessionToken: secrets[1], Source: "secret"})
	if resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_APPLIED {
		t.Errorf("first Swap = %v, %v; want applied", resp, err)
	}
	record(resp, err)

	e.val.refuse(&rotation.RefusalError{Reason: rotation.ReasonInvalidAccessKey, Message: "invalid credentials (host=h:443, code=InvalidAccessKeyId)"})
	resp, err = e.client.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: "AKIDREFUSED", SecretAccessKey: secrets[2], SessionToken: secrets[3], Source: "secret"})
	if resp.GetResult() != credentialsv1.SwapResult_SWAP_RESULT_REFUSED {
		t.Errorf("second Swap = %v, %v; want refused", resp, err)
	}
	record(resp, err)

	// Invalid: the secret itself breaks the allowlist (a space), so it is
	// exactly the value an error message might be tempted to quote.
	resp, err = e.client.Swap(ctx, &credentialsv1.SwapRequest{AccessKeyId: "AKIDINVALID", SecretAccessKey: secrets[4] + " x", SessionToken: secrets[5], Source: "secret"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("third Swap = %v, %v; want InvalidArgument", resp, err)
	}
	record(resp, err)

	st, err := e.client.Status(ctx, &credentialsv1.StatusRequest{})
	record(st, err)

	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("log output contains secret %q:\n%s", s, logs)
		}
		for _, a := range answers {
			if strings.Contains(a, s) {
				t.Errorf("answer contains secret %q: %s", s, a)
			}
		}
	}
	// Guard against a vacuous pass: the requests were logged, redacted.
	for _, want := range []string{"/rekey.credentials.v1.CredentialService/Swap", "AKIDAPPLIED", "AKIDREFUSED", "AKIDINVALID",
		`"code"="InvalidArgument"`, `"peerUid"=`, `secret_access_key:\"***\"`, `session_token:\"***\"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log output lacks %q:\n%s", want, logs)
		}
	}
}

// panickingManager checks that a bug in a handler costs one RPC, not the server.
type panickingManager struct{}

func (panickingManager) Swap(context.Context, rotation.Request) rotation.Outcome { panic("boom") }
func (panickingManager) Status() rotation.Status                                 { panic("boom") }
func (panickingManager) Report(string, string) error                             { panic("boom") }
func (panickingManager) EventsAfter(uint64) ([]rotation.Event, <-chan struct{}) {
	panic("boom")
}

func TestPanicBecomesInternal(t *testing.T) {
	path := shortSocketPath(t)
	logs := &logBuffer{}
	serve(t, panickingManager{}, listen(t, path, selfUID(), logs), logs)
	client := dial(t, path)
	for range 2 { // the server survives the first panic
		_, err := client.Status(rpcContext(t), &credentialsv1.StatusRequest{})
		if status.Code(err) != codes.Internal {
			t.Fatalf("Status = %v, want Internal", err)
		}
	}
	if !strings.Contains(logs.String(), "RPC handler panicked") {
		t.Errorf("panic not logged:\n%s", logs)
	}
}
