package volumecontext

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"rekey.dev/rekey/internal/contract"
)

// jwt is token-shaped and unique enough to be searched for in errors.
const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.U2VjcmV0U2lnbmF0dXJlVmFsdWU"

func tokensJSON(aud, tok, exp string) string {
	return fmt.Sprintf(`{%q:{"token":%q,"expirationTimestamp":%q}}`, aud, tok, exp)
}

func TestParseTokens(t *testing.T) {
	t.Parallel()
	exp := "2030-01-02T03:04:05Z"
	irsa := map[string]string{"bucket": "bkt", "url": "http://s3", "authType": "irsa", "roleArn": "arn:aws:iam::1:role/r"}
	rrsa := map[string]string{"bucket": "bkt", "url": "http://s3", "authType": "rrsa", "roleArn": "acs:ram::1:role/r",
		"oidcProviderArn": "acs:ram::1:oidc-provider/p"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const key = contract.PodInfoServiceAccountTokens
	for _, tc := range []struct {
		name    string
		attrs   map[string]string
		wantAud string // token expected for this audience
		wantErr string
		secrets map[string]string
	}{
		{name: "irsa default audience", attrs: with(irsa, key, tokensJSON("sts.amazonaws.com", jwt, exp)), wantAud: "sts.amazonaws.com"},
		{name: "rrsa default audience", attrs: with(rrsa, key, `{"sts.aliyuncs.com":{"token":"`+jwt+`","expirationTimestamp":"`+exp+`"},"other":{"token":"a.b.c","expirationTimestamp":"`+exp+`"}}`),
			wantAud: "sts.aliyuncs.com"},
		{name: "audience attribute", attrs: with(irsa, "audience", "https://oidc.example/x", key, tokensJSON("https://oidc.example/x", jwt, exp)),
			wantAud: "https://oidc.example/x"},
		{name: "unknown fields ignored", attrs: with(irsa, key, `{"sts.amazonaws.com":{"token":"`+jwt+`","expirationTimestamp":"`+exp+`","new":1}}`),
			wantAud: "sts.amazonaws.com"},
		{name: "no tokens passed", attrs: irsa},
		{name: "secret volume ignores tokens", attrs: map[string]string{"bucket": "bkt", "url": "http://s3", key: "{not json " + jwt},
			secrets: map[string]string{"akId": "AK", "akSecret": "SK"}},
		{name: "audience missing", attrs: with(irsa, key, tokensJSON("sts.aliyuncs.com", jwt, exp)),
			wantErr: `no token for audience "sts.amazonaws.com" (kubelet passed sts.aliyuncs.com)`},
		{name: "empty object", attrs: with(irsa, key, `{}`), wantErr: "kubelet passed none"},
		{name: "not json", attrs: with(irsa, key, `{"sts.amazonaws.com":{"token":"`+jwt), wantErr: "not a JSON object"},
		{name: "trailing data", attrs: with(irsa, key, tokensJSON("sts.amazonaws.com", jwt, exp)+`{"x":1}`), wantErr: "not a JSON object"},
		{name: "wrong type", attrs: with(irsa, key, `{"sts.amazonaws.com":{"token":["`+jwt+`"]}}`), wantErr: "not a JSON object"},
		{name: "not a jwt", attrs: with(irsa, key, tokensJSON("sts.amazonaws.com", "plain "+jwt, exp)), wantErr: "token is not a JWT"},
		{name: "token missing", attrs: with(irsa, key, `{"sts.amazonaws.com":{"expirationTimestamp":"`+exp+`"}}`), wantErr: "token is missing"},
		{name: "expiration missing", attrs: with(irsa, key, `{"sts.amazonaws.com":{"token":"`+jwt+`"}}`), wantErr: "expirationTimestamp is missing"},
		{name: "expiration bad", attrs: with(irsa, key, tokensJSON("sts.amazonaws.com", jwt, "tomorrow "+jwt)), wantErr: "not an RFC 3339 time"},
		{name: "token too long", attrs: with(irsa, key, tokensJSON("sts.amazonaws.com", jwt+strings.Repeat("A", maxTokenLen), exp)), wantErr: "longer than"},
		{name: "bad audience", attrs: with(irsa, key, tokensJSON("sts amazonaws\ncom", jwt, exp)), wantErr: "an audience is not"},
		{name: "bad audience attribute", attrs: with(irsa, "audience", "a b"), wantErr: "volumeAttributes[audience]"},
		{name: "too many audiences", attrs: with(irsa, key, func() string {
			var parts []string
			for i := 0; i <= maxAudiences; i++ {
				parts = append(parts, fmt.Sprintf(`"a%d":{"token":%q,"expirationTimestamp":%q}`, i, jwt, exp))
			}
			return "{" + strings.Join(parts, ",") + "}"
		}()), wantErr: "at most 16"},
		{name: "too large", attrs: with(irsa, key, strings.Repeat(" ", maxTokensJSON+1)), wantErr: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := Parse("vol", tc.attrs, tc.secrets)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), jwt[len(jwt)-20:]) {
					t.Errorf("error leaks the token: %v", err)
				}
				if !strings.Contains(err.Error(), "volumeAttributes["+key+"]") && !strings.Contains(tc.wantErr, "volumeAttributes") {
					t.Errorf("error does not name the attribute: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantAud == "" {
				if !v.Token.IsZero() {
					t.Errorf("token = %v, want none", v.Token)
				}
				return
			}
			if v.Token.Value != jwt || v.Token.Audience != tc.wantAud || !v.Token.Expiration.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("token = %v", v.Token)
			}
			for _, s := range []string{fmt.Sprint(v), fmt.Sprintf("%+v %#v %s %q", v, v, v.Token, v.Token)} {
				if strings.Contains(s, jwt[len(jwt)-20:]) {
					t.Errorf("formatting leaks the token: %s", s)
				}
			}
		})
	}
}
