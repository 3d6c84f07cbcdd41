package sts_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"rekey.dev/rekey/internal/sts"
	"rekey.dev/rekey/internal/sts/ststest"
)

const testToken = ststest.FakeToken

var alibabaSTS = ststest.Alibaba

func TestAssumeRoleWithOIDC(t *testing.T) {
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	srv := alibabaSTS(t, func(w http.ResponseWriter, form url.Values) {
		if form.Get("OIDCToken") != testToken || form.Get("RoleArn") != "acs:ram::123:role/r" ||
			form.Get("OIDCProviderArn") != "acs:ram::123:oidc-provider/ack-rrsa-c1" || form.Get("DurationSeconds") != "900" {
			t.Errorf("form %v", form)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"RequestId":"3D57EAD2-8723-1F26-B69C-F8707D8B565D",
		  "OIDCTokenInfo":{"Subject":"system:serviceaccount:ns:sa","Issuer":"https://oidc-ack.example"},
		  "AssumedRoleUser":{"AssumedRoleId":"33157794895460****","Arn":"acs:ram::123:role/r/rekey-sidecar"},
		  "Credentials":{"SecurityToken":"CAIShwJ1q6Ft5B2yfSjIr5bSEsj4","Expiration":"`+exp.Format(time.RFC3339)+`",
		    "AccessKeySecret":"GsAtVsq8yFEoRbvPt8gnXLaLsAcgAnR1","AccessKeyId":"STS.NUgYrLnoC37mZZCNnAbez"}}`)
	})
	a, err := sts.New(sts.Config{Kind: sts.KindRRSA, Endpoint: srv.URL, RoleARN: "acs:ram::123:role/r",
		OIDCProviderARN: "acs:ram::123:oidc-provider/ack-rrsa-c1", SessionName: "rekey-sidecar", Duration: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	k, err := a.Assume(context.Background(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	if k.AccessKeyID != "STS.NUgYrLnoC37mZZCNnAbez" || k.SecretAccessKey != "GsAtVsq8yFEoRbvPt8gnXLaLsAcgAnR1" ||
		k.SessionToken != "CAIShwJ1q6Ft5B2yfSjIr5bSEsj4" || !k.Expiration.Equal(exp) {
		t.Errorf("keys = %s, expiration %v", k, k.Expiration)
	}
}

func TestAssumeRoleWithOIDCErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		code      string
		temporary bool
	}{
		{"expired token", 400, `{"RequestId":"R1","HostId":"sts.aliyuncs.com","Code":"AuthenticationFail.OIDCToken.Expired","Message":"The OIDC token ` + testToken + ` has expired.","Recommend":"https://next.api.aliyun.com"}`,
			"AuthenticationFail.OIDCToken.Expired", false},
		{"no permission", 403, `{"RequestId":"R2","Code":"NoPermission","Message":"You are not authorized to do this action."}`, "NoPermission", false},
		{"throttled", 400, `{"RequestId":"R3","Code":"Throttling.User","Message":"Request was denied due to user flow control."}`, "Throttling.User", true},
		{"outage", 503, `<html>bad gateway</html>`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := alibabaSTS(t, func(w http.ResponseWriter, _ url.Values) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			a := &sts.OIDCAssumer{Endpoint: srv.URL, RoleARN: "r", OIDCProviderARN: "p", SessionName: "s"}
			_, err := a.Assume(context.Background(), testToken)
			var se *sts.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *sts.Error", err)
			}
			if se.Code != tt.code || se.Temporary() != tt.temporary || se.StatusCode != tt.status {
				t.Errorf("got code %q temporary %v status %d", se.Code, se.Temporary(), se.StatusCode)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error leaks the token: %v", err)
			}
		})
	}
	t.Run("no credentials", func(t *testing.T) {
		srv := alibabaSTS(t, func(w http.ResponseWriter, _ url.Values) { _, _ = io.WriteString(w, `{"RequestId":"x"}`) })
		a := &sts.OIDCAssumer{Endpoint: srv.URL, RoleARN: "r", OIDCProviderARN: "p", SessionName: "s"}
		if _, err := a.Assume(context.Background(), testToken); !errors.Is(err, sts.ErrResponse) {
			t.Errorf("err = %v, want ErrResponse", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		a := &sts.OIDCAssumer{Endpoint: "http://127.0.0.1:1", RoleARN: "r", OIDCProviderARN: "p", SessionName: "s"}
		_, err := a.Assume(context.Background(), testToken)
		if err == nil || sts.IsRefusal(err) || strings.Contains(err.Error(), testToken) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestAssumeRoleWithWebIdentityXML(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.PostForm.Get("Action") != "AssumeRoleWithWebIdentity" || r.PostForm.Get("Version") != "2011-06-15" ||
			r.PostForm.Get("WebIdentityToken") != testToken || r.PostForm.Get("RoleArn") != "arn:aws:iam::1:role/r" {
			t.Errorf("form %v", r.PostForm)
		}
		if r.PostForm.Get("WebIdentityToken") == "bad" {
			w.WriteHeader(400)
		}
		_, _ = io.WriteString(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>FwoGZXIvYXdzEJr</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2030-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`)
	}))
	defer srv.Close()
	a, _ := sts.New(sts.Config{Kind: sts.KindIRSA, Endpoint: srv.URL, RoleARN: "arn:aws:iam::1:role/r", SessionName: "s"})
	k, err := a.Assume(context.Background(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	if k.AccessKeyID != "ASIAIOSFODNN7EXAMPLE" || k.SessionToken != "FwoGZXIvYXdzEJr" || k.Expiration.Year() != 2030 {
		t.Errorf("keys = %s, expiration %v", k, k.Expiration)
	}

	errSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key</Message></Error><RequestId>r-1</RequestId></ErrorResponse>`)
	}))
	defer errSrv.Close()
	a = &sts.WebIdentityAssumer{Endpoint: errSrv.URL, SessionName: "s"}
	_, err = a.Assume(context.Background(), testToken)
	var se *sts.Error
	if !errors.As(err, &se) || se.Code != "InvalidIdentityToken" || se.RequestID != "r-1" || se.Temporary() {
		t.Errorf("err = %v", err)
	}
}
