package csidriver

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/internal/fakes3"
	"rekey.dev/rekey/internal/keys"
)

func TestPrecheck(t *testing.T) {
	t.Parallel()
	good := fakes3.NewKeys("AKGOOD")
	srv, err := fakes3.Start(good, "bkt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
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
