package fuseserver

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"

	"rekey.dev/rekey/fuseserver/keycustody"
	"rekey.dev/rekey/fuseserver/rotation"
	"rekey.dev/rekey/internal/keys"
)

// startKeys are the keys a server starts with.
type startKeys struct {
	keys keys.Keys
	// ledger of keys: zero for a new mount, the saved one on resume.
	ledger rotation.Ledger
	// custody is the key custody file, nil when the server has none.
	custody *keycustody.Store
	// fromCustody: the keys are those an earlier server of this mount
	// last used (a resume), not the ones delivered at start.
	fromCustody bool
}

// loadStartKeys reads the keys to start with. With a custody file that
// holds a record, those are the newest keys of the mount (an earlier server
// saved them on every swap) and win over any delivered at start, which may
// be older. Otherwise the delivered keys are used and saved to custody.
func loadStartKeys(cfg Config) (startKeys, error) {
	var sk startKeys
	if cfg.KeyCustodyFD >= 0 {
		f := os.NewFile(uintptr(cfg.KeyCustodyFD), "key-custody")
		if f == nil {
			return sk, fmt.Errorf("key custody fd %d is not open", cfg.KeyCustodyFD)
		}
		store, rec, ok, err := keycustody.Open(f)
		if err != nil {
			return sk, fmt.Errorf("key custody: %w", err)
		}
		sk.custody = store
		if ok {
			sk.keys, sk.fromCustody = rec.Keys, true
			sk.ledger = rotation.Ledger{Generation: rec.Generation, Replaced: rec.Replaced}
			discardDeliveredKeys(cfg)
			return sk, nil
		}
	}
	if cfg.KeysFD < 0 && cfg.KeysFile == "" {
		return sk, fmt.Errorf("no keys: the key custody file is empty and no keys were delivered")
	}
	k, err := readInitialKeys(cfg)
	if err != nil {
		return sk, err
	}
	sk.keys = k
	if sk.custody != nil {
		if err := sk.custody.Save(keycustody.Record{Keys: k}); err != nil {
			return sk, fmt.Errorf("key custody: %w", err)
		}
	}
	return sk, nil
}

// discardDeliveredKeys consumes keys delivered at start that custody
// supersedes, so a keys file does not stay on disk.
func discardDeliveredKeys(cfg Config) {
	if cfg.KeysFD >= 0 || cfg.KeysFile != "" {
		_, _ = readInitialKeys(cfg)
	}
}

// custodyApplier saves every key change, with the mount's ledger, to the
// custody file before the S3 client signs with it, so a server that
// resumes this mount starts on the newest keys and refuses the same
// replays.
type custodyApplier struct {
	store *keycustody.Store
	next  rotation.Applier
	log   logr.Logger
}

func (a custodyApplier) Apply(k keys.Keys, l rotation.Ledger) {
	if err := a.store.Save(keycustody.Record{Keys: k, Generation: l.Generation, Replaced: l.Replaced}); err != nil {
		a.log.Error(err, "keys not saved to custody: a resumed server would start on older keys until the next push",
			"fingerprint", k.Fingerprint(), "generation", l.Generation)
	}
	a.next.Apply(k, l)
}
