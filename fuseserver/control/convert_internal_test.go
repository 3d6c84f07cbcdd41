package control

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"rekey.dev/rekey/fuseserver/rotation"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

func TestReasonToProtoCoversEveryReason(t *testing.T) {
	seen := map[credentialsv1.SwapReason]rotation.Reason{}
	for r := rotation.ReasonNone; r <= rotation.ReasonOther; r++ {
		p := reasonToProto(r)
		if prev, dup := seen[p]; dup {
			t.Errorf("reasons %v and %v both map to %v", prev, r, p)
		}
		seen[p] = r
		if (p == credentialsv1.SwapReason_SWAP_REASON_UNSPECIFIED) != (r == rotation.ReasonNone) {
			t.Errorf("reason %v maps to %v", r, p)
		}
	}
	if len(seen) != len(credentialsv1.SwapReason_name) {
		t.Errorf("%d reasons mapped, the protocol has %d", len(seen), len(credentialsv1.SwapReason_name))
	}
	if got := reasonToProto(rotation.ReasonOther + 1); got != credentialsv1.SwapReason_SWAP_REASON_OTHER {
		t.Errorf("unknown reason maps to %v, want OTHER", got)
	}
	for r := rotation.ResultApplied; r <= rotation.ResultStale; r++ {
		if resultToProto(r) == credentialsv1.SwapResult_SWAP_RESULT_UNSPECIFIED {
			t.Errorf("result %v maps to UNSPECIFIED", r)
		}
	}
}

// TestMappingRoundTrips: every result and reason survives the way out and
// back, so the server and Client read the protocol the same way.
func TestMappingRoundTrips(t *testing.T) {
	for r := rotation.ResultApplied; r <= rotation.ResultStale; r++ {
		if got := resultFromProto(resultToProto(r)); got != r {
			t.Errorf("result %v came back as %v", r, got)
		}
	}
	for r := rotation.ReasonNone; r <= rotation.ReasonOther; r++ {
		if got := reasonFromProto(reasonToProto(r)); got != r {
			t.Errorf("reason %v came back as %v", r, got)
		}
	}
	if got := resultFromProto(credentialsv1.SwapResult(99)); got != 0 {
		t.Errorf("an unknown result maps to %v, want 0", got)
	}
	if got := reasonFromProto(credentialsv1.SwapReason(99)); got != rotation.ReasonOther {
		t.Errorf("an unknown reason maps to %v, want other", got)
	}
}

func TestStripSecrets(t *testing.T) {
	req := &credentialsv1.SwapRequest{AccessKeyId: "AKID", SecretAccessKey: "sk-value", SessionToken: "tok-value", Source: "secret"}
	// A newer client may send a secret field this server does not know.
	req.ProtoReflect().SetUnknown(protowire.AppendString(protowire.AppendTag(nil, 99, protowire.BytesType), "unknown-secret"))
	orig := proto.Clone(req)

	got := redacted(req).String()
	for _, s := range []string{"sk-value", "tok-value", "unknown-secret"} {
		if strings.Contains(got, s) {
			t.Errorf("redacted form %q contains %q", got, s)
		}
	}
	for _, s := range []string{`access_key_id:"AKID"`, `secret_access_key:"***"`, `session_token:"***"`, `source:"secret"`} {
		if !strings.Contains(got, s) {
			t.Errorf("redacted form %q lacks %q", got, s)
		}
	}
	if !proto.Equal(req, orig) {
		t.Errorf("StripSecrets modified its argument: %v", req)
	}
	// Unset secrets stay unset rather than appearing as "***".
	if got := redacted(&credentialsv1.SwapRequest{AccessKeyId: "AKID"}).String(); strings.Contains(got, "***") {
		t.Errorf("redacted form of a request without secrets = %q", got)
	}
}

func TestScrub(t *testing.T) {
	req := &credentialsv1.SwapRequest{SecretAccessKey: "sk-value", SessionToken: "tok-value"}
	got := scrub("backend echoed sk-value and tok-value", req)
	if got != "backend echoed *** and ***" {
		t.Errorf("scrub = %q", got)
	}
}

func TestMapsHostRoot(t *testing.T) {
	cases := map[string]bool{
		"         0          0 4294967295\n": true,  // no user namespace
		"0 1879048192 65536\n":               false, // hostUsers: false
		"0 0 1\n65532 1879113724 1\n":        true,
		"1000 0 1\n":                         true, // outer root mapped to 1000
		"":                                   false,
		"garbage":                            false,
	}
	for in, want := range cases {
		if got := mapsHostRoot(in); got != want {
			t.Errorf("mapsHostRoot(%q) = %v, want %v", in, got, want)
		}
	}
}
