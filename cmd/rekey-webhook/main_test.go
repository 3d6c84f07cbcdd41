package main

import (
	"flag"
	"testing"
)

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{
		"--namespace=rekey-system", "--native-sidecar=false", "--sidecar-image=img:1",
		"--cert-extra-sans=localhost,webhook.example", "--cert-mode=cert-manager",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Injector.NativeSidecar || cfg.Injector.Image != "img:1" || cfg.CertMode != certModeCertManager ||
		len(cfg.Certs.ExtraSANs) != 2 || cfg.Certs.Namespace != "rekey-system" {
		t.Errorf("unexpected config %+v", cfg)
	}
	for name, args := range map[string][]string{
		"no namespace":   {},
		"bad cert mode":  {"--namespace=x", "--cert-mode=vault"},
		"bad resources":  {"--namespace=x", "--sidecar-memory-limit=lots"},
		"empty image":    {"--namespace=x", "--sidecar-image="},
		"unknown flag":   {"--namespace=x", "--nope"},
		"short lifetime": {"--namespace=x", "--token-expiration-seconds=60"},
	} {
		if _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), args); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
