package csidriver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

// startS3 starts an S3 server with bucket "bkt" and answers it with its keys.
func startS3(t *testing.T) (*fakes3.Server, keys.Keys) {
	t.Helper()
	good := fakes3.NewKeys("AKGOOD")
	srv, err := fakes3.Start(good, "bkt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, good
}

func TestPrecheck(t *testing.T) {
	t.Parallel()
	srv, good := startS3(t)
	if _, err := srv.Client(good).PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bkt"),
		Key: aws.String("data/file"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	// A closed port: connection refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()

	vol := func(mut func(v *volumecontext.Volume)) volumecontext.Volume {
		v := volumecontext.Volume{ID: "pv", Bucket: "bkt", Endpoint: srv.URL, Keys: good}
		v.Options.PathStyle = true
		mut(&v)
		return v
	}
	for _, tc := range []struct {
		name string
		vol  volumecontext.Volume
		want string // prefix of the message; "" means success
		kind PrecheckKind
	}{
		{"ok", vol(func(*volumecontext.Volume) {}), "", 0},
		{"ok with path", vol(func(v *volumecontext.Volume) { v.Prefix = "data" }), "", 0},
		{"unknown access key", vol(func(v *volumecontext.Volume) { v.Keys = fakes3.NewKeys("AKNOPE") }),
			"access key does not exist (InvalidAccessKeyId)", PrecheckDenied},
		{"wrong secret", vol(func(v *volumecontext.Volume) {
			v.Keys = keys.Keys{AccessKeyID: good.AccessKeyID, SecretAccessKey: "wrongwrongwrong"}
		}), "secret key mismatch (SignatureDoesNotMatch)", PrecheckDenied},
		{"bucket missing", vol(func(v *volumecontext.Volume) { v.Bucket = "nobucket" }), "bucket not found", PrecheckDenied},
		{"path missing", vol(func(v *volumecontext.Volume) { v.Prefix = "nothere" }), "path not found", PrecheckDenied},
		{"endpoint down", vol(func(v *volumecontext.Volume) { v.Endpoint = closed }),
			"endpoint unreachable: " + strings.TrimPrefix(closed, "http://") + " (connection refused)", PrecheckUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := Precheck(context.Background(), tc.vol)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Precheck: %v", err)
				}
				return
			}
			var pe *PrecheckError
			if !errors.As(err, &pe) {
				t.Fatalf("Precheck = %v (%T), want a *PrecheckError", err, err)
			}
			if !strings.HasPrefix(pe.Message, tc.want) || pe.Kind != tc.kind {
				t.Errorf("Precheck = %q (kind %d), want prefix %q (kind %d)", pe.Message, pe.Kind, tc.want, tc.kind)
			}
			if strings.Contains(pe.Message, tc.vol.Keys.SecretAccessKey) {
				t.Errorf("message contains the secret key: %q", pe.Message)
			}
		})
	}
}

// TestPrecheckKeySource checks that a refusal names where the keys came
// from: the Secret, or the STS that exchanged the service-account token, and
// never quotes the secret key or the token.
func TestPrecheckKeySource(t *testing.T) {
	t.Parallel()
	srv, good := startS3(t)
	token := volumecontext.Token{Audience: "sts.amazonaws.com", Value: "eyJhbGciOiJSUzI1NiJ9.tokenbody.signature"}
	sources := []struct {
		name, authType, want string
		token                volumecontext.Token
	}{
		{"secret", contract.AuthTypeSecret, "the Secret", volumecontext.Token{}},
		// rrsa/irsa without a token: kubelet passed none, the keys are the Secret's.
		{"irsa without token", contract.AuthTypeIRSA, "the Secret", volumecontext.Token{}},
		{"rrsa", contract.AuthTypeRRSA, "the STS (AssumeRoleWithOIDC)", token},
		{"irsa", contract.AuthTypeIRSA, "the STS (AssumeRoleWithWebIdentity)", token},
	}
	refusals := []struct {
		name, want string // want: %[1]q the access key ID, %[2]s the source
		keys       keys.Keys
		ref        *rotation.RefusalError // nil: ask the S3 server
	}{
		{name: "unknown access key", keys: fakes3.NewKeys("AKNOPE"),
			want: `access key does not exist (InvalidAccessKeyId): access key ID %[1]q from %[2]s is unknown to `},
		{name: "wrong secret", keys: keys.Keys{AccessKeyID: good.AccessKeyID, SecretAccessKey: "wrongwrongwrong"},
			want: `secret key mismatch (SignatureDoesNotMatch): the secret key from %[2]s does not belong to access key ID %[1]q`},
		{name: "expired token", keys: good, ref: &rotation.RefusalError{Reason: rotation.ReasonExpiredToken, Message: "keys expired"},
			want: `session token expired (ExpiredToken): the temporary keys from %[2]s for access key ID %[1]q`},
	}
	for _, src := range sources {
		for _, r := range refusals {
			t.Run(src.name+"/"+r.name, func(t *testing.T) {
				t.Parallel()
				v := volumecontext.Volume{ID: "pv", Bucket: "bkt", Endpoint: srv.URL, AuthType: src.authType, Keys: r.keys, Token: src.token}
				v.Options.PathStyle = true
				var got string
				if r.ref != nil {
					got = refusal(v, "s3.example.com", r.ref).Message
				} else {
					var pe *PrecheckError
					if err := Precheck(context.Background(), v); !errors.As(err, &pe) {
						t.Fatalf("Precheck = %v (%T), want a *PrecheckError", err, err)
					}
					got = pe.Message
				}
				if want := fmt.Sprintf(r.want, r.keys.AccessKeyID, src.want); !strings.HasPrefix(got, want) {
					t.Errorf("message = %q\nwant prefix %q", got, want)
				}
				if !src.token.IsZero() && strings.Contains(got, "Secret") {
					t.Errorf("keys from the STS, but the message names the Secret: %q", got)
				}
				if strings.Contains(got, r.keys.SecretAccessKey) || strings.Contains(got, token.Value) {
					t.Errorf("message contains a secret value: %q", got)
				}
			})
		}
	}
}
