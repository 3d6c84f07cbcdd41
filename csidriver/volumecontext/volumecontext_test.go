package volumecontext

import (
	"errors"
	"strings"
	"testing"

	"rekey.dev/rekey/internal/contract"
)

const secretValue = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"

func TestParse(t *testing.T) {
	t.Parallel()
	ak := map[string]string{"akId": "AKIDEXAMPLE", "akSecret": secretValue}
	for _, tc := range []struct {
		name    string
		id      string
		attrs   map[string]string
		secrets map[string]string
		wantErr []string // substrings of the error
		check   func(t *testing.T, v Volume)
	}{
		{name: "ack oss pv", id: "pv-oss", attrs: map[string]string{"bucket": "bk1", "url": "oss-cn-hangzhou.aliyuncs.com",
			"path": "/data/", "otherOpts": "-o umask=022 -o allow_other", contract.PodInfoUID: "1f0e-22", contract.PodInfoNamespace: "ns", contract.PodInfoName: "p"},
			secrets: ak, check: func(t *testing.T, v Volume) {
				if v.Bucket != "bk1" || v.Prefix != "data" || v.Endpoint != "https://oss-cn-hangzhou.aliyuncs.com" ||
					!v.Options.AllowOther || v.AuthType != "secret" || v.Keys.AccessKeyID != "AKIDEXAMPLE" || v.Pod.UID != "1f0e-22" {
					t.Errorf("got %+v", v)
				}
				if v.SecretRef() != "ns/p" {
					t.Errorf("SecretRef = %q", v.SecretRef())
				}
			}},
		{name: "csi-s3 pv", id: "manualbucket/some/path", attrs: map[string]string{"mounter": "geesefs", "capacity": "10Gi"},
			secrets: map[string]string{"accessKeyID": "AK2", "secretAccessKey": secretValue, "endpoint": "http://127.0.0.1:9000", "region": "eu-1"},
			check: func(t *testing.T, v Volume) {
				if v.Bucket != "manualbucket" || v.Prefix != "some/path" || v.Endpoint != "http://127.0.0.1:9000" || v.Region != "eu-1" {
					t.Errorf("got %+v", v)
				}
			}},
		{name: "sts secret", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3"},
			secrets: map[string]string{"AccessKeyId": "STS", "AccessKeySecret": secretValue, "SecurityToken": "tok", "Expiration": "2030-01-01T00:00:00Z"},
			check: func(t *testing.T, v Volume) {
				if v.Keys.SessionToken != "tok" || v.Keys.Expiration.Year() != 2030 {
					t.Errorf("got %v", v.Keys)
				}
			}},
		{name: "rrsa without keys", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3", "authType": "rrsa",
			"roleArn": "acs:ram::1:role/r", "oidcProviderArn": "acs:ram::1:oidc-provider/p", contract.PodInfoEphemeral: "true"},
			check: func(t *testing.T, v Volume) {
				if v.AuthType != "rrsa" || !v.Keys.IsZero() || !v.Ephemeral {
					t.Errorf("got %+v", v)
				}
			}},
		{name: "missing bucket and url", id: "Not_A_Bucket", secrets: ak,
			wantErr: []string{"volumeAttributes[bucket]: Required", "volumeAttributes[url]: Required"}},
		{name: "bad url", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "ftp://x"}, secrets: ak,
			wantErr: []string{"volumeAttributes[url]", "scheme"}},
		{name: "bad otherOpts", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3", "otherOpts": "-o nope"}, secrets: ak,
			wantErr: []string{"volumeAttributes[otherOpts]", "unknown option"}},
		{name: "bad authType", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3", "authType": "x"}, secrets: ak,
			wantErr: []string{"volumeAttributes[authType]: Unsupported value"}},
		{name: "rrsa needs role", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3", "authType": "rrsa"},
			wantErr: []string{"volumeAttributes[roleArn]: Required", "volumeAttributes[oidcProviderArn]: Required"}},
		{name: "missing secret key", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3"},
			secrets: map[string]string{"akId": "AK"}, wantErr: []string{"secrets: Invalid value", "secret access key is empty"}},
		{name: "no secret", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3"},
			wantErr: []string{"secrets: Invalid value", "akId/akSecret"}},
		{name: "secret with a bad character", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3"},
			secrets: map[string]string{"akId": "AK", "akSecret": secretValue + " x"}, wantErr: []string{"secret access key, position"}},
		{name: "path traversal", id: "v", attrs: map[string]string{"bucket": "bkt", "url": "http://s3", "path": "a/../b"}, secrets: ak,
			wantErr: []string{"volumeAttributes[path]"}},
		{name: "no volume id", attrs: map[string]string{"bucket": "bkt", "url": "http://s3"}, secrets: ak, wantErr: []string{"volumeId: Required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := Parse(tc.id, tc.attrs, tc.secrets)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Parse succeeded, want an error containing %q", tc.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), secretValue) {
					t.Errorf("error quotes the secret: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tc.check(t, v)
		})
	}
}

func TestIgnoredAttributes(t *testing.T) {
	t.Parallel()
	got := IgnoredAttributes(map[string]string{"bucket": "b", "mounter": "geesefs", "capacity": "1Gi",
		contract.PodInfoName: "p", "csi.storage.k8s.io/serviceAccount.tokens": "{}"})
	if strings.Join(got, ",") != "capacity,mounter" {
		t.Errorf("IgnoredAttributes = %q", got)
	}
}

// FuzzParse checks that Parse never panics and never puts a secret value
// into its error: the secret key, the Secret's endpoint, or the user info
// of an endpoint URL (in the attributes or the Secret).
func FuzzParse(f *testing.F) {
	f.Add("bkt/p", "bkt", "http://h", "-o ro", "secret", "AKID", secretValue, "")
	f.Add("", "", "", "", "rrsa", "", "", "")
	f.Add("x", "B", "ftp://", "-o", "x", "A K", "s\x00", "")
	f.Add("pv", "bkt", "https://AKIDAKIDAKID:longsecretvalue@h", "", "secret", "AKID", secretValue, "")
	f.Add("pv", "bkt", "", "", "secret", "AKID", secretValue, "https://AKIDAKIDAKID:s3cr3t%zz@[::1")
	f.Add("pv", "bkt", "http://h", "-o staging_mb=4096,write_cache_mb=512", "secret", "AKID", secretValue, "")
	f.Fuzz(func(t *testing.T, id, bucket, url, opts, auth, ak, sk, endpoint string) {
		_, err := Parse(id, map[string]string{"bucket": bucket, "url": url, "otherOpts": opts, "authType": auth},
			map[string]string{"akId": ak, "akSecret": sk, "endpoint": endpoint})
		if err == nil {
			return
		}
		others := id + bucket + opts + auth + ak
		if len(sk) >= 8 && strings.Contains(err.Error(), sk) && !strings.Contains(others, sk) {
			t.Fatalf("error quotes the secret %q: %v", sk, err)
		}
		if len(endpoint) >= 8 && strings.Contains(err.Error(), endpoint) && !strings.Contains(others+url, endpoint) {
			t.Fatalf("error quotes the Secret's endpoint %q: %v", endpoint, err)
		}
		for _, u := range []string{url, endpoint} {
			at := strings.LastIndexByte(u, '@')
			if at < 0 {
				continue
			}
			info := u[:at]
			if i := strings.Index(info, "://"); i >= 0 {
				info = info[i+3:]
			}
			if len(info) >= 8 && strings.Contains(err.Error(), info) && !strings.Contains(others, info) {
				t.Fatalf("error quotes the user info %q: %v", info, err)
			}
		}
	})
}

// TestEndpointErrorsHideUserInfo: an endpoint with user info (in a volume
// attribute, the Secret or stsEndpoint), valid or not as a URL, never
// reaches the error, not even in part.
func TestEndpointErrorsHideUserInfo(t *testing.T) {
	t.Parallel()
	const ak, sk = "AKIDLEAKCHECK", "s3cr3t%zzSECRETPART/+="
	for _, c := range []struct{ name, url, secretEndpoint, stsEndpoint string }{
		{"attribute with user info", "https://" + ak + ":" + sk + "@s3.example.com", "", ""},
		{"attribute, user info and a bad escape", "https://" + ak + ":s3cr3t%zz@s3.example.com", "", ""},
		{"attribute, user info, bad port", "https://" + ak + ":" + sk + "@s3.example.com:99999x", "", ""},
		{"Secret endpoint with user info", "", "https://" + ak + ":" + sk + "@s3.example.com", ""},
		{"Secret endpoint that does not parse", "", "https://" + ak + ":s3cr3t%zz@[::1", ""},
		{"user info in the path", "https://s3.example.com/" + ak + ":" + sk + "@x", "", ""},
		{"stsEndpoint with user info", "https://s3.example.com", "", "https://" + ak + ":" + sk + "@sts.example.com"},
		{"stsEndpoint that does not parse", "https://s3.example.com", "", "https://" + ak + ":s3cr3t%zz@[::1"},
	} {
		attrs := map[string]string{"bucket": "bkt"}
		if c.url != "" {
			attrs["url"] = c.url
		}
		if c.stsEndpoint != "" {
			attrs["authType"], attrs["roleArn"], attrs["oidcProviderArn"] = "rrsa", "acs:ram::1:role/r", "acs:ram::1:oidc-provider/p"
			attrs["stsEndpoint"] = c.stsEndpoint
		}
		secrets := map[string]string{"akId": "AKID", "akSecret": secretValue}
		if c.secretEndpoint != "" {
			secrets["endpoint"] = c.secretEndpoint
		}
		_, err := Parse("pv", attrs, secrets)
		if err == nil {
			if c.name == "user info in the path" {
				continue // a path is not user info; nothing to quote
			}
			t.Errorf("%s: accepted", c.name)
			continue
		}
		msg := err.Error()
		if c.stsEndpoint != "" && !strings.Contains(msg, "stsEndpoint") {
			t.Errorf("%s: error does not name stsEndpoint: %s", c.name, msg)
		}
		for _, part := range []string{ak, "s3cr3t", "SECRETPART", "%zz"} {
			if strings.Contains(msg, part) {
				t.Errorf("%s: error quotes %q: %s", c.name, part, msg)
			}
		}
	}
}
