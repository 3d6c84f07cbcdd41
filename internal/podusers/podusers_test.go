package podusers

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kubeletFile is what kubelet v1.34 writes for a pod with hostUsers: false.
const kubeletFile = `{"uidMappings":[{"hostId":1879048192,"containerId":0,"length":65536}],"gidMappings":[{"hostId":1879048192,"containerId":0,"length":65536}]}`

func TestParseKubeletFile(t *testing.T) {
	m, err := Parse([]byte(kubeletFile))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id   uint32
		want uint32
		ok   bool
	}{{0, 1879048192, true}, {65532, 1879048192 + 65532, true}, {65535, 1879048192 + 65535, true}, {65536, 0, false}}
	for _, c := range cases {
		if got, ok := m.HostUID(c.id); got != c.want || ok != c.ok {
			t.Errorf("HostUID(%d) = %d, %v; want %d, %v", c.id, got, ok, c.want, c.ok)
		}
		if got, ok := m.HostGID(c.id); got != c.want || ok != c.ok {
			t.Errorf("HostGID(%d) = %d, %v; want %d, %v", c.id, got, ok, c.want, c.ok)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	cases := map[string]string{
		"not JSON":        `uidMappings`,
		"unknown field":   `{"uidMappings":[{"hostId":1,"containerId":0,"length":1}],"gidMappings":[{"hostId":1,"containerId":0,"length":1}],"extra":1}`,
		"no uid mappings": `{"gidMappings":[{"hostId":1,"containerId":0,"length":1}]}`,
		"empty range":     `{"uidMappings":[{"hostId":1,"containerId":0,"length":0}],"gidMappings":[{"hostId":1,"containerId":0,"length":1}]}`,
		"wraps":           `{"uidMappings":[{"hostId":4294967295,"containerId":0,"length":2}],"gidMappings":[{"hostId":1,"containerId":0,"length":1}]}`,
		"negative":        `{"uidMappings":[{"hostId":-1,"containerId":0,"length":2}],"gidMappings":[{"hostId":1,"containerId":0,"length":1}]}`,
		"trailing data":   kubeletFile + `{}`,
		"too many ranges": `{"uidMappings":[` + strings.TrimSuffix(strings.Repeat(`{"hostId":1,"containerId":0,"length":1},`, MaxMappings+1), ",") + `],"gidMappings":[{"hostId":1,"containerId":0,"length":1}]}`,
	}
	for name, in := range cases {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := Parse([]byte(strings.Repeat(" ", maxFileSize+1))); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized: err = %v", err)
	}
}

func TestReadMissing(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), FileName))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	p := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(p, []byte(kubeletFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := Read(p); err != nil || len(m.UIDs) != 1 {
		t.Fatalf("Read = %+v, %v", m, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(kubeletFile))
	f.Add([]byte(`{"uidMappings":[],"gidMappings":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		for _, r := range m.UIDs {
			if h, ok := m.HostUID(r.ContainerID + r.Length - 1); !ok || h != r.HostID+r.Length-1 {
				// an earlier range may cover the same ID; only check that a covered ID maps
				if !ok {
					t.Fatalf("last ID of range %+v not mapped", r)
				}
			}
		}
	})
}
