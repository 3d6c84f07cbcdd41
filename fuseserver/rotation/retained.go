package rotation

// EventStagedDataRetained is emitted by the FUSE server itself (never by a
// client) when data an application wrote could not be uploaded and stays
// in the staging directory on the node; Keys names the objects.
const EventStagedDataRetained EventKind = EventReported + 1

// Limits of a retained event: at most MaxRetainedKeys keys are named, each
// cut to MaxKeyLen bytes (the reason says how many there are in all).
const (
	MaxRetainedKeys = 32
	MaxKeyLen       = 1024
)

// StagedDataRetained emits an EventStagedDataRetained for keys with reason
// (cleaned like a Report's). It carries no secret: object keys and the
// reason only.
func (m *Manager) StagedDataRetained(keys []string, reason string) {
	if len(keys) == 0 {
		return
	}
	named := make([]string, 0, min(len(keys), MaxRetainedKeys))
	for _, k := range keys[:min(len(keys), MaxRetainedKeys)] {
		named = append(named, Clean(k, MaxKeyLen))
	}
	m.mu.Lock()
	gen, fp := m.ledger.Generation, m.current.Fingerprint()
	m.mu.Unlock()
	m.emit(Event{Kind: EventStagedDataRetained, VolumeID: m.id.VolumeID, Reason: Clean(reason, MaxReasonLen),
		Generation: gen, Fingerprint: fp, Source: "rekey-fuse", Time: m.now(), Keys: named})
}
