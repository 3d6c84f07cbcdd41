// Package session is the file in which a FUSE server records what it and
// the kernel agreed on at INIT, so that a later server process, possibly of
// a newer rekey version, can take over the same FUSE connection without a
// new INIT (the kernel sends INIT once per connection). The file is JSON
// with a format version; a reader refuses versions and fields it does not
// know rather than guessing, and never deletes the file.
package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FormatVersion is the version this package writes and the only one it
// reads.
const FormatVersion = 1

// maxSize bounds what Read accepts.
const maxSize = 64 << 10

// ErrUnsupportedVersion is returned by Read for a file of another format
// version.
var ErrUnsupportedVersion = errors.New("session: unsupported format version")

// State is the content of a session file.
type State struct {
	// Init is what the kernel offered and the server answered at INIT.
	Init fuse.InitState
	// Epoch counts the servers that took the connection over. Each one
	// issues file handles of its own epoch (go-fuse's FileHandleEpoch), so
	// its handles never collide with those of earlier servers, which the
	// kernel may still hold.
	Epoch uint32
}

type file struct {
	Version int            `json:"version"`
	Init    fuse.InitState `json:"init"`
	Epoch   uint32         `json:"epoch"`
}

// Write records st at path (write to a temporary file, then rename).
func Write(path string, st State) error {
	b, err := json.MarshalIndent(file{Version: FormatVersion, Init: st.Init, Epoch: st.Epoch}, "", "  ")
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".session-*")
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("session: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	return nil
}

// Read parses the session file at path.
func Read(path string) (State, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the supervisor names the file
	if err != nil {
		return State{}, fmt.Errorf("session: %w", err)
	}
	if len(b) > maxSize {
		return State{}, fmt.Errorf("session: %s is %d bytes, more than %d", path, len(b), maxSize)
	}
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return State{}, fmt.Errorf("session: %s: not a session file: %w", path, err)
	}
	if v.Version != FormatVersion {
		return State{}, fmt.Errorf("%w %d in %s (this build reads %d)", ErrUnsupportedVersion, v.Version, path, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return State{}, fmt.Errorf("session: %s: %w", path, err)
	}
	return State{Init: f.Init, Epoch: f.Epoch}, nil
}
