package keys_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rekey.dev/rekey/internal/keys"
)

const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

func TestFromSecret(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		data    map[string]string
		want    keys.Keys
		wantErr error
	}{
		{"ack style", map[string]string{"akId": "AK1", "akSecret": secret}, keys.Keys{AccessKeyID: "AK1", SecretAccessKey: secret}, nil},
		{"csi-s3 style with endpoint", map[string]string{"accessKeyID": "AK2", "secretAccessKey": secret + "\n", "endpoint": "http://x", "region": "r"},
			keys.Keys{AccessKeyID: "AK2", SecretAccessKey: secret}, nil},
		{"sts style", map[string]string{"AccessKeyId": "STS.AK", "AccessKeySecret": secret, "SecurityToken": "tok", "Expiration": "2030-01-02T03:04:05Z"},
			keys.Keys{AccessKeyID: "STS.AK", SecretAccessKey: secret, SessionToken: "tok", Expiration: exp}, nil},
		{"nothing", map[string]string{"foo": "bar"}, keys.Keys{}, keys.ErrMissingAccessKeyID},
		{"missing secret", map[string]string{"akId": "AK"}, keys.Keys{}, keys.ErrMissingSecret},
		{"two conventions", map[string]string{"akId": "AK", "akSecret": "s", "accessKeyID": "AK", "secretAccessKey": "s"}, keys.Keys{}, keys.ErrAmbiguous},
		{"bad expiration", map[string]string{"AccessKeyId": "A", "AccessKeySecret": "s", "Expiration": "tomorrow"}, keys.Keys{}, keys.ErrBadExpiration},
		{"space in key", map[string]string{"akId": "A K", "akSecret": "s"}, keys.Keys{}, keys.ErrBadCharacter},
		{"too long", map[string]string{"akId": "A", "akSecret": strings.Repeat("s", keys.MaxSecretLen+1)}, keys.Keys{}, keys.ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keys.FromSecret(tt.data)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRedaction(t *testing.T) {
	k := keys.Keys{AccessKeyID: "AKID", SecretAccessKey: secret, SessionToken: "TOKENVALUE"}
	j, _ := json.Marshal(map[string]any{"k": k})
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q", k, k, k, k, k), k.String(), string(j)} {
		if strings.Contains(s, secret) || strings.Contains(s, "TOKENVALUE") {
			t.Fatalf("output leaks: %s", s)
		}
		if !strings.Contains(s, "AKID:") {
			t.Fatalf("output lacks the fingerprint: %s", s)
		}
	}
	if k.Fingerprint() == (keys.Keys{AccessKeyID: "AKID", SecretAccessKey: secret}).Fingerprint() {
		t.Error("fingerprint ignores the session token")
	}
}

func TestWireRoundTrip(t *testing.T) {
	k := keys.Keys{AccessKeyID: "AK", SecretAccessKey: secret, SessionToken: "t", Expiration: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	var buf bytes.Buffer
	if err := keys.Encode(&buf, k); err != nil {
		t.Fatal(err)
	}
	got, err := keys.Decode(&buf)
	if err != nil || !got.Equal(k) {
		t.Fatalf("Decode = %s, %v", got, err)
	}
	for _, bad := range []string{"", "{", `{"accessKeyId":"A","secretAccessKey":"` + secret + `","extra":1}`, `{"accessKeyId":1}`} {
		_, err := keys.Decode(strings.NewReader(bad))
		if err == nil {
			t.Errorf("Decode(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("Decode error leaks: %v", err)
		}
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		var buf bytes.Buffer
		_ = keys.Encode(&buf, keys.Keys{AccessKeyID: "AK", SecretAccessKey: secret})
		if err := os.WriteFile(p, buf.Bytes(), mode); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(p, mode)
		return p
	}
	p := write("good", 0o600)
	if k, err := keys.ReadFile(p); err != nil || k.AccessKeyID != "AK" {
		t.Fatalf("ReadFile = %s, %v", k, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("key file not removed: %v", err)
	}
	p = write("wide", 0o644)
	if _, err := keys.ReadFile(p); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("world-readable file accepted: %v", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("refused key file not removed")
	}
}

// TestFingerprint: the access key ID, a colon and 16 hex digits of a hash
// that changes with the ID, the secret and the token, and not with the
// expiry.
func TestFingerprint(t *testing.T) {
	k := keys.Keys{AccessKeyID: "AKID", SecretAccessKey: secret, SessionToken: "tok"}
	fp := k.Fingerprint()
	if id, sum, ok := strings.Cut(fp, ":"); !ok || id != "AKID" || len(sum) != 16 || strings.Trim(sum, "0123456789abcdef") != "" {
		t.Fatalf("Fingerprint = %q, want AKID:<16 hex digits>", fp)
	}
	later := k
	later.Expiration = time.Now()
	if later.Fingerprint() != fp {
		t.Error("the expiry changes the fingerprint")
	}
	for _, other := range []keys.Keys{
		{AccessKeyID: "AKIE", SecretAccessKey: secret, SessionToken: "tok"},
		{AccessKeyID: "AKID", SecretAccessKey: secret + "x", SessionToken: "tok"},
		{AccessKeyID: "AKID", SecretAccessKey: secret},
	} {
		if other.Fingerprint() == fp {
			t.Errorf("%+v has the fingerprint of other keys", other)
		}
	}
}
