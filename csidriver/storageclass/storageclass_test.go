package storageclass

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		params  map[string]string
		check   func(t *testing.T, c Class)
		wantErr string
	}{
		{name: "prefix mode defaults", params: map[string]string{"url": "http://minio:9000", "bucket": "shared"},
			check: func(t *testing.T, c Class) {
				if c.BucketMode() || c.PathPattern != DefaultPathPattern || c.Endpoint != "http://minio:9000" {
					t.Errorf("class = %+v", c)
				}
			}},
		{name: "bucket mode", params: map[string]string{"url": "https://s3.example.com", "region": "eu-west-1"},
			check: func(t *testing.T, c Class) {
				if !c.BucketMode() || c.Region != "eu-west-1" {
					t.Errorf("class = %+v", c)
				}
			}},
		{name: "csi-s3 names", params: map[string]string{"bucket": "shared", "mounter": "geesefs", "options": "-o use_path_request_style",
			"csi.storage.k8s.io/provisioner-secret-name": "x"},
			check: func(t *testing.T, c Class) {
				if !c.Options.PathStyle || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "mounter is ignored") {
					t.Errorf("class = %+v", c)
				}
			}},
		{name: "ACK subpath", params: map[string]string{"bucket": "shared", "url": "https://oss-cn-hangzhou.aliyuncs.com", "volumeAs": "subpath", "path": "/k8s/"},
			check: func(t *testing.T, c Class) {
				if c.PathPattern != "k8s/${pv.name}" {
					t.Errorf("pathPattern = %q", c.PathPattern)
				}
			}},
		{name: "pass-through auth", params: map[string]string{"bucket": "shared", "authType": "irsa", "roleArn": "arn:aws:iam::1:role/r"},
			check: func(t *testing.T, c Class) {
				if c.Attributes["authType"] != "irsa" || c.Attributes["roleArn"] != "arn:aws:iam::1:role/r" {
					t.Errorf("attributes = %v", c.Attributes)
				}
			}},
		{name: "unknown parameter", params: map[string]string{"bucket": "shared", "bukket": "x"}, wantErr: `parameters[bukket]: Unsupported value`},
		{name: "bad bucket", params: map[string]string{"bucket": "Shared_Bucket!"}, wantErr: "parameters[bucket]: Invalid value"},
		{name: "bad url", params: map[string]string{"url": "ftp://x"}, wantErr: "parameters[url]"},
		{name: "bad region", params: map[string]string{"region": "EU West"}, wantErr: "parameters[region]"},
		{name: "bad template", params: map[string]string{"bucket": "b", "pathPattern": "${pvc.uid}"}, wantErr: "${pvc.uid} is not allowed here"},
		{name: "annotations not in pathPattern", params: map[string]string{"bucket": "b", "pathPattern": "${pvc.annotations['a']}"}, wantErr: "is not allowed here"},
		{name: "unterminated template", params: map[string]string{"bucket": "b", "pathPattern": "${pvc.name"}, wantErr: "unterminated"},
		{name: "pathPattern without bucket", params: map[string]string{"pathPattern": "${pvc.name}"}, wantErr: "parameters[bucket]: Required"},
		{name: "volumeAs sharepath", params: map[string]string{"bucket": "b", "volumeAs": "sharepath"}, wantErr: "parameters[volumeAs]: Unsupported value"},
		{name: "both option names", params: map[string]string{"bucket": "b", "options": "-o ro", "otherOpts": "-o ro"}, wantErr: "not both"},
		{name: "unknown option", params: map[string]string{"bucket": "b", "options": "--memory-limit 1000"}, wantErr: "parameters[options]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse(tc.params)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestPrefix(t *testing.T) {
	t.Parallel()
	meta := map[string]string{MetaPVCName: "data-0", MetaPVCNamespace: "team-a", MetaPVName: "pvc-123"}
	for _, tc := range []struct {
		pattern string
		meta    map[string]string
		want    string
		wantErr string
	}{
		{pattern: "${pv.name}", meta: meta, want: "pvc-123"},
		{pattern: "${pv.name}", meta: nil, want: "vol-name"},
		{pattern: "/k8s/${pvc.namespace}/${pvc.name}/", meta: meta, want: "k8s/team-a/data-0"},
		{pattern: "${pvc.namespace}-${pvc.name}", meta: meta, want: "team-a-data-0"},
		{pattern: "${pvc.name}", meta: nil, wantErr: "${pvc.name} is not known here"},
		{pattern: "a/../b", meta: meta, wantErr: "no '.' or '..' segment"},
		{pattern: "a//${pv.name}", meta: meta, wantErr: "empty segment"},
		{pattern: "/", meta: meta, wantErr: "empty prefix"},
		{pattern: strings.Repeat("x", 600), meta: meta, wantErr: "at most 512"},
	} {
		got, err := Class{PathPattern: tc.pattern}.Prefix("vol-name", tc.meta)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.pattern, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.pattern, got, err, tc.want)
		}
	}
}

func TestBucketName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"pvc-0b6e6a1c-5f1e-4d55-9c1b-2a0e8f3d7c11", "pvc-0b6e6a1c-5f1e-4d55-9c1b-2a0e8f3d7c11"},
		{"PVC_Data.0", "pvc-data.0"},
		{"sanity-controller-" + strings.Repeat("x", 100), "sanity-controller-" + strings.Repeat("x", 45)},
		{"a..b", "a.b"},
		{"-a-b-", "a-b"},
		{"x", ""},
		{"10.0.0.1", ""},
		{"xn--abc", ""},
	} {
		got, err := BucketName(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("BucketName(%q) = %q, %v; want an error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("BucketName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestExpandSecretTemplates(t *testing.T) {
	t.Parallel()
	v := Vars{PVName: "pvc-1", PVCName: "data", PVCNamespace: "ns", PVCAnnotations: map[string]string{"example.com/secret": "keys-a"}}
	for _, tc := range []struct {
		tmpl    string
		allowed []string
		want    string
		wantErr string
	}{
		{tmpl: "s3-keys", allowed: SecretNameVars, want: "s3-keys"},
		{tmpl: "${pvc.name}-keys", allowed: SecretNameVars, want: "data-keys"},
		{tmpl: "${pvc.annotations['example.com/secret']}", allowed: SecretNameVars, want: "keys-a"},
		{tmpl: "${pvc.annotations['missing']}", allowed: SecretNameVars, wantErr: `no annotation "missing"`},
		{tmpl: "${pvc.namespace}", allowed: SecretNamespaceVars, want: "ns"},
		{tmpl: "${pvc.name}", allowed: SecretNamespaceVars, wantErr: "${pvc.name} is not allowed here"},
		{tmpl: "${pvc.annotations['a']}", allowed: SecretNamespaceVars, wantErr: "is not allowed here"},
		{tmpl: "keys-$1", allowed: SecretNameVars, wantErr: "a '$' outside"},
	} {
		got, err := Expand(tc.tmpl, v, tc.allowed)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.tmpl, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
}
