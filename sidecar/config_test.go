package sidecar

import (
	"strings"
	"testing"

	"rekey.dev/rekey/internal/contract"
)

func TestConfigValidate(t *testing.T) {
	ok := contract.Source{VolumeID: "v", AuthType: contract.AuthTypeSecret, SecretDir: "/s"}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{SocketDir: "/run/rekey", Sources: []contract.Source{ok}}, ""},
		{"default auth type", Config{SocketDir: "/r", Sources: []contract.Source{{VolumeID: "v", SecretDir: "/s"}}}, ""},
		{"no socket dir", Config{Sources: []contract.Source{ok}}, "socket dir"},
		{"no sources", Config{SocketDir: "/r"}, "at least one source"},
		{"inline without pod uid", Config{SocketDir: "/r", Sources: []contract.Source{{VolumeName: "x", SecretDir: "/s"}}}, "pod UID"},
		{"duplicate", Config{SocketDir: "/r", Sources: []contract.Source{ok, ok}}, "same volume"},
		{"rrsa incomplete", Config{SocketDir: "/r", Sources: []contract.Source{{VolumeID: "v", AuthType: contract.AuthTypeRRSA, TokenFile: "/t"}}}, "oidcProviderArn"},
		{"irsa without token", Config{SocketDir: "/r", Sources: []contract.Source{{VolumeID: "v", AuthType: contract.AuthTypeIRSA}}}, "tokenFile"},
		{"unknown auth type", Config{SocketDir: "/r", Sources: []contract.Source{{VolumeID: "v", AuthType: "ldap"}}}, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestVolumeIDOfInlineVolume(t *testing.T) {
	cfg := Config{PodUID: "0f6e7d1c-uid"}
	got := cfg.volumeID(contract.Source{VolumeName: "data"})
	if got != contract.EphemeralVolumeID("0f6e7d1c-uid", "data") || !strings.HasPrefix(got, "csi-") {
		t.Errorf("volumeID = %q", got)
	}
	if got := cfg.volumeID(contract.Source{VolumeID: "pv-1", VolumeName: "data"}); got != "pv-1" {
		t.Errorf("volumeID with a handle = %q", got)
	}
}
