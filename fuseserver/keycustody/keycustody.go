// Package keycustody keeps the keys a FUSE server is using, and their
// generation, in a memory-only file (memfd) that the server's supervisor
// holds a descriptor of. When the server dies, its replacement reads the
// newest keys from there: a resumed server never falls back to the keys the
// mount started with, and the keys never touch a disk or a command line.
//
// The record also holds the fingerprints of the keys the mount replaced
// (rotation.Ledger), so the replacement refuses replays of them too.
//
// The file has two fixed-size slots. Each save goes to the slot that does
// not hold the newest record, so a writer killed in the middle of a save
// leaves the previous record intact; a checksum tells a torn slot from a
// whole one. The layout is versioned (FormatVersion); a reader refuses a
// version it does not know rather than guessing. Additions that older
// readers can skip safely raise FormatMinor instead.
package keycustody

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"

	"rekey.dev/rekey/internal/keys"
)

// FormatVersion is the version of the slot layout this package writes and
// the only one it reads.
const FormatVersion = 1

// FormatMinor numbers additions to format 1 that readers of an older minor
// skip without harm:
//
//	0  the payload is the keys
//	1  the payload is the keys followed by a JSON array of the fingerprints
//	   of replaced keys (readers of minor 0 decode the first JSON value and
//	   stop there, so they read the keys and ignore the list)
const FormatMinor = 1

// MaxReplaced bounds the replaced fingerprints a record holds; a slot has
// room for them beside the largest keys.
const MaxReplaced = 64

// Layout of a slot (little endian):
//
//	0  magic   [4]byte "RKKC"
//	4  version uint16  FormatVersion
//	6  minor   uint16  FormatMinor (zero in files of minor 0)
//	8  seq     uint64  increases with every save
//	16 gen     uint64  the keys' generation (rotation.Manager)
//	24 length  uint32  of the payload
//	28 crc     uint32  CRC-32C of bytes 8..28 and the payload
//	32 payload         the keys in the wire format of package keys, then
//	                   (minor >= 1) the replaced fingerprints as a JSON array
const (
	headerSize = 32
	// SlotSize bounds one record; the largest valid keys take about 19 KiB.
	SlotSize = 32 << 10
	fileSize = 2 * SlotSize
)

var magic = [4]byte{'R', 'K', 'K', 'C'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of Load.
var (
	ErrUnsupportedVersion = errors.New("keycustody: unsupported format version")
	ErrCorrupt            = errors.New("keycustody: no whole record (both slots are damaged)")
	ErrNotCustody         = errors.New("keycustody: the file is not a key custody file")
)

// Record is what the custody file holds.
type Record struct {
	Keys       keys.Keys
	Generation uint64
	// Replaced are fingerprints of keys the mount replaced, oldest first
	// (rotation.Ledger.Replaced); at most MaxReplaced are kept, the newest.
	Replaced []string
}

// Store reads and writes one custody file. Save calls are serialised.
type Store struct {
	f   *os.File
	mu  sync.Mutex
	seq uint64 // of the newest record; 0 before the first
}

// Open returns a Store on f, an open custody file (see Create), and the
// newest record in it; ok is false when nothing was saved yet.
func Open(f *os.File) (s *Store, rec Record, ok bool, err error) {
	s = &Store{f: f}
	rec, seq, ok, err := s.load()
	if err != nil {
		return nil, Record{}, false, err
	}
	s.seq = seq
	return s, rec, ok, nil
}

// File returns the custody file, to pass on to another process.
func (s *Store) File() *os.File { return s.f }

// Save makes rec the newest record.
func (s *Store) Save(rec Record) error {
	var payload bytes.Buffer
	if err := keys.Encode(&payload, rec.Keys); err != nil {
		return fmt.Errorf("keycustody: %w", err)
	}
	replaced := rec.Replaced
	if len(replaced) > MaxReplaced {
		replaced = replaced[len(replaced)-MaxReplaced:]
	}
	if replaced == nil {
		replaced = []string{}
	}
	if err := json.NewEncoder(&payload).Encode(replaced); err != nil {
		return fmt.Errorf("keycustody: %w", err)
	}
	if payload.Len() > SlotSize-headerSize {
		return fmt.Errorf("keycustody: keys take %d bytes, more than a slot holds", payload.Len())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.seq + 1
	buf := make([]byte, headerSize+payload.Len())
	copy(buf[0:4], magic[:])
	binary.LittleEndian.PutUint16(buf[4:6], FormatVersion)
	binary.LittleEndian.PutUint16(buf[6:8], FormatMinor)
	binary.LittleEndian.PutUint64(buf[8:16], seq)
	binary.LittleEndian.PutUint64(buf[16:24], rec.Generation)
	binary.LittleEndian.PutUint32(buf[24:28], uint32(payload.Len()))
	copy(buf[headerSize:], payload.Bytes())
	binary.LittleEndian.PutUint32(buf[28:32], checksum(buf))
	// The newest record is in slot seq%2; write the other one.
	if _, err := s.f.WriteAt(buf, int64(seq%2)*SlotSize); err != nil {
		return fmt.Errorf("keycustody: save: %w", err)
	}
	s.seq = seq
	clear(buf) // the secret stays in this buffer otherwise
	return nil
}

func checksum(slot []byte) uint32 {
	c := crc32.Update(0, castagnoli, slot[8:28])
	n := binary.LittleEndian.Uint32(slot[24:28])
	return crc32.Update(c, castagnoli, slot[headerSize:headerSize+int(n)])
}

// load returns the newest whole record of the two slots.
func (s *Store) load() (rec Record, seq uint64, ok bool, err error) {
	buf := make([]byte, fileSize)
	defer clear(buf)
	n, err := s.f.ReadAt(buf, 0)
	if n != fileSize {
		return Record{}, 0, false, fmt.Errorf("%w: %d bytes, want %d (%w)", ErrNotCustody, n, fileSize, err)
	}
	var best []byte
	empty := 0
	for i := 0; i < 2; i++ {
		slot := buf[i*SlotSize : (i+1)*SlotSize]
		seq, err := parseSlot(slot)
		switch {
		case errors.Is(err, ErrUnsupportedVersion):
			return Record{}, 0, false, err
		case errors.Is(err, errNoMagic) && allZero(slot[:headerSize]):
			empty++
		case err != nil: // torn or foreign: the other slot may be whole
		case best == nil || seq > binary.LittleEndian.Uint64(best[8:16]):
			best = slot
		}
	}
	if best == nil {
		if empty == 2 {
			return Record{}, 0, false, nil
		}
		return Record{}, 0, false, ErrCorrupt
	}
	n32 := binary.LittleEndian.Uint32(best[24:28])
	rec, err = decodePayload(best[headerSize:headerSize+int(n32)], binary.LittleEndian.Uint16(best[6:8]))
	if err != nil {
		return Record{}, 0, false, err
	}
	rec.Generation = binary.LittleEndian.Uint64(best[16:24])
	return rec, binary.LittleEndian.Uint64(best[8:16]), true, nil
}

// decodePayload reads the keys and, from minor 1 on, the replaced
// fingerprints. A minor newer than FormatMinor is read as far as this
// build knows it.
func decodePayload(payload []byte, minor uint16) (Record, error) {
	r := bytes.NewReader(payload)
	// keys.Decode reads exactly one JSON value; what follows stays in r.
	dec := json.NewDecoder(r)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return Record{}, fmt.Errorf("keycustody: %w: the keys are not one JSON value", ErrCorrupt)
	}
	k, err := keys.Decode(bytes.NewReader(raw))
	clear(raw)
	if err != nil {
		return Record{}, fmt.Errorf("keycustody: %w", err)
	}
	rec := Record{Keys: k}
	if minor == 0 {
		return rec, nil
	}
	if err := dec.Decode(&rec.Replaced); err != nil {
		return Record{}, fmt.Errorf("keycustody: %w: the replaced fingerprints are not a JSON array of strings", ErrCorrupt)
	}
	if len(rec.Replaced) > MaxReplaced {
		return Record{}, fmt.Errorf("keycustody: %w: %d replaced fingerprints, at most %d", ErrCorrupt, len(rec.Replaced), MaxReplaced)
	}
	return rec, nil
}

var errNoMagic = errors.New("keycustody: no magic")

// parseSlot checks one slot and returns its sequence number.
func parseSlot(slot []byte) (uint64, error) {
	if !bytes.Equal(slot[0:4], magic[:]) {
		return 0, errNoMagic
	}
	if v := binary.LittleEndian.Uint16(slot[4:6]); v != FormatVersion {
		return 0, fmt.Errorf("%w %d (this build reads %d)", ErrUnsupportedVersion, v, FormatVersion)
	}
	n := binary.LittleEndian.Uint32(slot[24:28])
	if n == 0 || int(n) > SlotSize-headerSize || checksum(slot) != binary.LittleEndian.Uint32(slot[28:32]) {
		return 0, ErrCorrupt
	}
	return binary.LittleEndian.Uint64(slot[8:16]), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
