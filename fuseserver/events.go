package fuseserver

import (
	"encoding/json"
	"io"
	"time"

	"github.com/go-logr/logr"

	"rekey.dev/rekey/fuseserver/rotation"
)

// EventRecord is one line of the events stream a parent process reads from
// the descriptor given as Config.EventsFD: JSON, one object per line.
type EventRecord struct {
	Kind        string    `json:"kind"` // applied, refused or reported
	VolumeID    string    `json:"volumeId"`
	Reason      string    `json:"reason,omitempty"`
	Generation  uint64    `json:"generation"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Source      string    `json:"source,omitempty"`
	Time        time.Time `json:"time"`
	// Keys are the objects of a "retained" event (staged data kept on
	// the node because it could not be uploaded).
	Keys []string `json:"keys,omitempty"`
}

// NewEventRecord converts a rotation.Event.
func NewEventRecord(ev rotation.Event) EventRecord {
	return EventRecord{Kind: ev.Kind.String(), VolumeID: ev.VolumeID, Reason: ev.Reason,
		Generation: ev.Generation, Fingerprint: ev.Fingerprint, Source: ev.Source, Time: ev.Time, Keys: ev.Keys}
}

// forwardEvents copies events to w as JSON lines (when w is set) and logs
// them, until events is closed or done is.
func forwardEvents(events <-chan rotation.Event, done <-chan struct{}, w io.Writer, log logr.Logger) {
	var enc *json.Encoder
	if w != nil {
		enc = json.NewEncoder(w)
	}
	for {
		select {
		case <-done:
			return
		case ev := <-events:
			rec := NewEventRecord(ev)
			kv := []any{"kind", rec.Kind, "volumeId", rec.VolumeID, "generation", rec.Generation,
				"fingerprint", rec.Fingerprint, "source", rec.Source}
			switch rec.Kind {
			case "applied":
				log.Info("keys swapped", kv...)
			case "retained":
				log.Info("staged data kept on the node: it could not be uploaded", "volumeId", rec.VolumeID,
					"keys", rec.Keys, "reason", rec.Reason)
			default:
				log.Info("credential refresh failed", append(kv, "reason", rec.Reason)...)
			}
			if enc != nil {
				if err := enc.Encode(rec); err != nil {
					log.Error(err, "writing event to parent failed; events are only logged from now on")
					enc = nil
				}
			}
		}
	}
}
