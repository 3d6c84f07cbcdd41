package supervisor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"

	"rekey.dev/rekey/csidriver/supervisor"
)

// Version skew of the supervisor's contracts with the rekey before
// hand-off (protocol 2, state files without an owner): fixtures in
// testdata are what that version wrote and sent.

// rawCall sends one raw request line to the socket at path and returns the
// reply line.
func rawCall(t *testing.T, path, line string) map[string]any {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.NewDecoder(c).Decode(&out); err != nil {
		t.Fatalf("reply to %s: %v", line, err)
	}
	return out
}

// TestProtocolSkew: requests of protocol 1 (no "v") and 2 are served by
// this supervisor; one of a newer protocol is refused naming both versions;
// a hand-off op outside protocol 3 sessions is answered, not misread.
func TestProtocolSkew(t *testing.T) {
	dir := t.TempDir()
	sup, err := supervisor.New(t.Context(), supervisor.Config{FuseBinary: "/bin/false", StateDir: filepath.Join(dir, "state"), Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := serveSocket(t, t.Context(), sup, dir)
	for _, line := range []string{`{"op":"list"}`, `{"v":2,"op":"list"}`, `{"v":3,"op":"list"}`} {
		if out := rawCall(t, client.Path, line); out["error"] != nil {
			t.Errorf("%s: %v", line, out["error"])
		}
	}
	if out := rawCall(t, client.Path, `{"v":3,"op":"get","id":"nosuchmount"}`); out["error"] != nil || out["infos"] != nil {
		t.Errorf("get of an unknown mount: %v", out)
	}
	out := rawCall(t, client.Path, `{"v":2,"op":"descriptors","id":"nosuchmount"}`)
	if e, _ := out["error"].(string); !strings.Contains(e, "no such mount") {
		t.Errorf("protocol 2 descriptors of an unknown mount: %v", out)
	}
	out = rawCall(t, client.Path, `{"v":4,"op":"list"}`)
	if e, _ := out["error"].(string); !strings.Contains(e, "version 4") || !strings.Contains(e, "speaks 3") {
		t.Errorf("a request of protocol 4: %v, want a refusal naming 4 and 3", out)
	}
	out = rawCall(t, client.Path, `{"v":3,"op":"release","id":"x"}`)
	if e, _ := out["error"].(string); !strings.Contains(e, "unknown op") {
		t.Errorf("release outside a hand-off session: %v", out)
	}
	// A hand-off session with no mounts: opened, then done; after it this
	// supervisor starts nothing and sends drivers to the newer one.
	c, err := net.Dial("unix", client.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	dec := json.NewDecoder(c)
	for _, line := range []string{`{"v":3,"op":"handoff"}`, `{"v":3,"op":"handoff-done"}`} {
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := dec.Decode(&out); err != nil || out["error"] != nil {
			t.Fatalf("%s: %v, %v", line, out, err)
		}
	}
	if !sup.Superseded() {
		t.Error("not superseded after a hand-off")
	}
	out = rawCall(t, client.Path, `{"v":3,"op":"watch"}`)
	if e, _ := out["error"].(string); !strings.Contains(e, "handed its mounts") {
		t.Errorf("watch after the hand-off: %v", out)
	}
}

// TestLegacyStateWhileOldSupervisorRuns: a state file of the rekey before
// hand-off (no owner) while a supervisor answers on the node socket is a
// mount that supervisor still runs and cannot hand off: New refuses to
// start and says what to do, instead of adopting (and, not seeing the old
// server, aborting) a live mount.
func TestLegacyStateWhileOldSupervisorRuns(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	old, err := supervisor.New(t.Context(), supervisor.Config{FuseBinary: "/bin/false", StateDir: filepath.Join(dir, "old"), Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := serveSocket(t, t.Context(), old, dir)
	fixture, err := os.ReadFile("testdata/state-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "8c0a6b6f1bb3bd2b3e5a2f05.json"), fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err = supervisor.New(ctx, supervisor.Config{FuseBinary: "/bin/false", StateDir: state, NodeSocket: client.Path, Log: testr.New(t)})
	if err == nil || !strings.Contains(err.Error(), "cannot hand off") || !strings.Contains(err.Error(), "docs/install.md") {
		t.Fatalf("New with a legacy mount while a supervisor answers: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(state, "8c0a6b6f1bb3bd2b3e5a2f05.json"))
	if !bytes.Equal(b, fixture) {
		t.Error("the legacy state file was changed")
	}
}

// TestGetAgainstOlderSupervisor: Client.Get against a supervisor without
// "get" (protocol 2) says so with ErrUnknownOp, so the driver lists instead.
func TestGetAgainstOlderSupervisor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			var req map[string]any
			_ = json.NewDecoder(c).Decode(&req)
			// What a protocol-2 supervisor answers to an op it lacks.
			_, _ = c.Write([]byte(`{"error":"supervisor: unknown op \"get\""}` + "\n"))
			_ = c.Close()
		}
	}()
	_, _, err = (&supervisor.Client{Path: path}).Get(t.Context(), "x")
	if !errors.Is(err, supervisor.ErrUnknownOp) {
		t.Fatalf("Get against protocol 2: %v, want ErrUnknownOp", err)
	}
}
