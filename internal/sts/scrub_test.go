package sts

import (
	"net/url"
	"strings"
	"testing"
)

// TestScrubTokenEchoes: an STS message that echoes the token whole, a JWT
// segment of it, a truncated prefix, URL-encoded or glued to other text
// keeps none of it (no eight characters of the token in a row), and the
// rest of the message stays readable.
func TestScrubTokenEchoes(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAifQ.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu"
	parts := strings.Split(token, ".")
	for _, msg := range []string{
		"Invalid token " + token,
		"Token " + parts[1] + " is not valid",
		"Signature " + parts[2] + " does not verify",
		"Token starting with " + token[:40] + "... is expired",
		"WebIdentityToken=" + url.QueryEscape(token) + " rejected",
		"bad:" + token[10:30] + "!",
		"prefix" + token[5:25] + "suffix glued",
	} {
		got := scrubToken(msg, token)
		for i := 0; i+8 <= len(token); i++ {
			if strings.Contains(got, token[i:i+8]) {
				t.Errorf("scrubbed %q still holds %q of the token: %q", msg, token[i:i+8], got)
				break
			}
		}
		if !strings.Contains(got, "[redacted]") {
			t.Errorf("scrubbed %q: %q, want [redacted]", msg, got)
		}
	}
	if got := scrubToken("Request was denied due to user flow control.", token); got != "Request was denied due to user flow control." {
		t.Errorf("a message without the token changed: %q", got)
	}
}
