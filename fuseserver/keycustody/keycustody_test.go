package keycustody

import (
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"rekey.dev/rekey/internal/keys"
)

var update = flag.Bool("update", false, "rewrite testdata/v1.bin")

func newStore(t *testing.T) *Store {
	t.Helper()
	f, err := Create("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	s, _, ok, err := Open(f)
	if err != nil || ok {
		t.Fatalf("Open(new) = ok %v, %v; want empty", ok, err)
	}
	return s
}

func reopen(t *testing.T, s *Store) (Record, bool, error) {
	t.Helper()
	_, rec, ok, err := Open(s.File())
	return rec, ok, err
}

func TestSaveLoadAlternates(t *testing.T) {
	s := newStore(t)
	exp := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for i, k := range []keys.Keys{
		{AccessKeyID: "AK1", SecretAccessKey: "S1"},
		{AccessKeyID: "AK2", SecretAccessKey: "S2", SessionToken: "T2", Expiration: exp},
		{AccessKeyID: "AK3", SecretAccessKey: "S3"},
	} {
		if err := s.Save(Record{Keys: k, Generation: uint64(10 + i)}); err != nil {
			t.Fatal(err)
		}
		rec, ok, err := reopen(t, s)
		if err != nil || !ok || !rec.Keys.Equal(k) || rec.Generation != uint64(10+i) {
			t.Fatalf("after save %d: %v %v %+v", i, ok, err, rec)
		}
	}
	// A second Store on the same file continues the sequence.
	s2, _, _, err := Open(s.File())
	if err != nil {
		t.Fatal(err)
	}
	k4 := keys.Keys{AccessKeyID: "AK4", SecretAccessKey: "S4"}
	if err := s2.Save(Record{Keys: k4, Generation: 20}); err != nil {
		t.Fatal(err)
	}
	if rec, _, _ := reopen(t, s); !rec.Keys.Equal(k4) {
		t.Fatalf("newest = %s, want AK4", rec.Keys.AccessKeyID)
	}
}

// A writer killed in the middle of a save tears the slot it wrote; the
// previous record is still whole and is what a reader gets.
func TestTornSaveKeepsPrevious(t *testing.T) {
	s := newStore(t)
	k1 := keys.Keys{AccessKeyID: "AK1", SecretAccessKey: "S1"}
	if err := s.Save(Record{Keys: k1, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(Record{Keys: keys.Keys{AccessKeyID: "AK2", SecretAccessKey: "S2"}, Generation: 2}); err != nil {
		t.Fatal(err)
	}
	// seq 2 went to slot 0: damage its payload.
	if _, err := s.File().WriteAt([]byte("xx"), headerSize+3); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := reopen(t, s)
	if err != nil || !ok || !rec.Keys.Equal(k1) || rec.Generation != 1 {
		t.Fatalf("got %+v ok=%v err=%v, want AK1 generation 1", rec, ok, err)
	}
	// Both damaged: an error, never made-up keys.
	if _, err := s.File().WriteAt([]byte("xx"), SlotSize+headerSize+3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reopen(t, s); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

func TestUnsupportedVersion(t *testing.T) {
	s := newStore(t)
	if err := s.Save(Record{Keys: keys.Keys{AccessKeyID: "AK1", SecretAccessKey: "S1"}, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	var v [2]byte
	binary.LittleEndian.PutUint16(v[:], FormatVersion+1)
	if _, err := s.File().WriteAt(v[:], SlotSize+4); err != nil { // seq 1 is in slot 1
		t.Fatal(err)
	}
	if _, _, err := reopen(t, s); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("err = %v, want ErrUnsupportedVersion", err)
	}
}

func TestNotCustody(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "small"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, _, err := Open(f); !errors.Is(err, ErrNotCustody) {
		t.Fatalf("err = %v, want ErrNotCustody", err)
	}
}

func TestSecretNotInErrors(t *testing.T) {
	s := newStore(t)
	big := keys.Keys{AccessKeyID: "AK", SecretAccessKey: "SECRETVALUE", SessionToken: string(make([]byte, SlotSize))}
	err := s.Save(Record{Keys: big})
	if err == nil {
		t.Fatal("oversized keys saved")
	}
	for _, bad := range []string{"SECRETVALUE"} {
		if strings.Contains(err.Error(), bad) {
			t.Fatalf("error %q contains the secret", err)
		}
	}
}

// TestFormatV1Fixture reads a custody file written by format version 1 (a
// checked-in fixture, fake keys): a newer build must keep reading what an
// older server left behind. -update rewrites it from this build.
func TestFormatV1Fixture(t *testing.T) {
	path := filepath.Join("testdata", "v1.bin")
	want := Record{Keys: keys.Keys{AccessKeyID: "AKFIXTURE", SecretAccessKey: "fixture-secret",
		SessionToken: "fixture-token", Expiration: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, Generation: 1733400000000000000}
	if *update {
		s := newStore(t)
		if err := s.Save(Record{Keys: keys.Keys{AccessKeyID: "AKOLD", SecretAccessKey: "old"}, Generation: 7}); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(want); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, fileSize)
		if _, err := s.File().ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, rec, ok, err := Open(f)
	if err != nil || !ok {
		t.Fatalf("Open(fixture) = %v, %v", ok, err)
	}
	if !rec.Keys.Equal(want.Keys) || rec.Generation != want.Generation {
		t.Fatalf("fixture = %s gen %d, want %s gen %d", rec.Keys.AccessKeyID, rec.Generation, want.Keys.AccessKeyID, want.Generation)
	}
}

// TestReplacedRoundTrip saves the ledger's replaced fingerprints with the
// keys and reads them back, keeping the newest MaxReplaced.
func TestReplacedRoundTrip(t *testing.T) {
	s := newStore(t)
	var replaced []string
	for i := 0; i < MaxReplaced+5; i++ {
		replaced = append(replaced, "AK"+strings.Repeat("x", i%7)+":"+string(rune('a'+i%26)))
	}
	if err := s.Save(Record{Keys: keys.Keys{AccessKeyID: "AK", SecretAccessKey: "sk"}, Generation: 9, Replaced: replaced}); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := reopen(t, s)
	if err != nil || !ok {
		t.Fatalf("reopen = %v, %v", ok, err)
	}
	want := replaced[len(replaced)-MaxReplaced:]
	if rec.Generation != 9 || strings.Join(rec.Replaced, ",") != strings.Join(want, ",") {
		t.Fatalf("replaced = %v gen %d, want the newest %d", rec.Replaced, rec.Generation, MaxReplaced)
	}
}

// TestMinorSkew: a reader of minor 0 (the payload read as keys only, what
// servers before the replaced list do) reads a record of minor 1, and this
// build reads records of minor 0 (the v1.bin fixture, and a fresh one).
func TestMinorSkew(t *testing.T) {
	s := newStore(t)
	want := keys.Keys{AccessKeyID: "AKNEW", SecretAccessKey: "new-secret"}
	if err := s.Save(Record{Keys: want, Generation: 3, Replaced: []string{"AKOLD:0123456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	slot := make([]byte, SlotSize)
	if _, err := s.File().ReadAt(slot, int64(1%2)*SlotSize); err != nil {
		t.Fatal(err)
	}
	if minor := binary.LittleEndian.Uint16(slot[6:8]); minor != FormatMinor {
		t.Fatalf("minor = %d, want %d", minor, FormatMinor)
	}
	n := binary.LittleEndian.Uint32(slot[24:28])
	// What a minor-0 reader does with the payload: keys.Decode of all of it.
	old, err := keys.Decode(strings.NewReader(string(slot[headerSize : headerSize+int(n)])))
	if err != nil || !old.Equal(want) {
		t.Fatalf("a minor-0 reader got %v, %v", old.AccessKeyID, err)
	}
	rec, err := decodePayload(slot[headerSize:headerSize+int(n)], 0)
	if err != nil || !rec.Keys.Equal(want) || rec.Replaced != nil {
		t.Fatalf("decodePayload(minor 0) = %+v, %v", rec.Replaced, err)
	}
}

// TestCorruptReplacedList: a list that is not an array of strings, or is
// longer than MaxReplaced, is refused with ErrCorrupt and no secret.
func TestCorruptReplacedList(t *testing.T) {
	keysJSON := `{"accessKeyId":"AK","secretAccessKey":"very-secret-value"}` + "\n"
	for name, tail := range map[string]string{
		"not an array": `{"a":1}`,
		"numbers":      `[1,2]`,
		"too long":     "[" + strings.TrimSuffix(strings.Repeat(`"x",`, MaxReplaced+1), ",") + "]",
		"missing":      ``,
	} {
		_, err := decodePayload([]byte(keysJSON+tail), 1)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "very-secret") {
			t.Errorf("%s: error %q contains the secret", name, err)
		}
	}
}

// TestCreateSealed: the custody file is a memfd (RAM only, no name in any
// directory), close-on-exec, and sealed against resizing and further
// sealing.
func TestCreateSealed(t *testing.T) {
	f, err := Create("test")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))); err != nil || !strings.HasPrefix(link, "/memfd:") {
		t.Errorf("custody file is %q (%v), want a memfd", link, err)
	}
	if flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor flags %#x (%v), want close-on-exec", flags, err)
	}
	want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || seals&want != want {
		t.Errorf("seals %#x (%v), want shrink, grow and seal sealed", seals, err)
	}
	if err := f.Truncate(fileSize * 2); err == nil {
		t.Error("the custody file grew")
	}
}
