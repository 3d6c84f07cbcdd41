package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"rekey.dev/rekey/rekeyctl"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "" for none
		check   func(Config) bool
	}{
		{args: []string{"status", "-A"}, check: func(c Config) bool { return c.Command == "status" && c.AllNamespaces }},
		{args: []string{"status", "-n", "shop", "--pod", "web-0"}, check: func(c Config) bool { return c.Namespace == "shop" && c.Pod == "web-0" }},
		{args: []string{"wait", "--secret", "shop/keys", "--timeout", "90s"},
			check: func(c Config) bool { return c.Secret == "shop/keys" && c.Timeout == 90*time.Second }},
		{args: []string{"wait"}, wantErr: "wait needs --secret"},
		{args: []string{"wait", "--secret", "keys"}, wantErr: `"keys" is not NAMESPACE/NAME`},
		{args: []string{"rotate", "--secret", "shop/keys"}, wantErr: "rotate needs --from-file"},
		{args: []string{"rotate", "--secret", "shop/keys", "--from-file", "password=/etc/hostname"}, wantErr: `entry "password" is not a key name`},
		{args: []string{"rotate", "--secret", "shop/keys", "--from-file", "akId=/etc/hostname"},
			check: func(c Config) bool { return len(c.Entries["akId"]) > 0 }},
		{args: []string{"revoke"}, wantErr: `unknown command "revoke"`},
		{args: []string{"status", "extra"}, wantErr: "unexpected arguments"},
		{args: nil, wantErr: "name a command"},
	} {
		cfg, err := parse(tc.args, io.Discard)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
		case tc.wantErr != "" && !errors.Is(err, rekeyctl.ErrUsage):
			t.Errorf("%q: err = %v is not a usage error", tc.args, err)
		case tc.check != nil && !tc.check(cfg):
			t.Errorf("%q: config %+v", tc.args, cfg)
		}
	}
}

// TestExitCodes: 0 safe, 1 not safe (the gate for scripts), 2 unanswerable.
func TestExitCodes(t *testing.T) {
	var stderr bytes.Buffer
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&rekeyctl.NotSafeError{Progress: rekeyctl.Progress{Secret: "a/b", Total: 2}}, 1},
		{rekeyctl.ErrSecretNotFound, 2},
		{rekeyctl.ErrUsage, 2},
	} {
		if got := exitCode(tc.err, &stderr); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if !strings.Contains(stderr.String(), "kubectl-rekey: not safe to revoke") {
		t.Errorf("stderr: %s", stderr.String())
	}
}
