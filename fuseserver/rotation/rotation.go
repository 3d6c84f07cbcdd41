// Package rotation decides whether a FUSE server takes new keys. A Manager
// holds the keys in use and their generation; Swap validates candidates with
// a Validator, refuses stale generations and keys the mount already
// replaced (decide.go has the ordering policy), treats identical keys as a no-op,
// applies accepted keys through an Applier, and emits every outcome and
// every Report as an Event for the parent process.
package rotation

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode"

	"rekey.dev/rekey/internal/keys"
)

// Result is what a Swap did.
type Result int

// Results of a Swap.
const (
	ResultApplied   Result = iota + 1 // the new keys are in use
	ResultUnchanged                   // the keys were already in use; nothing changed
	ResultRefused                     // validation failed; the old keys stay
	ResultStale                       // the generation is not newer than the current one
)

func (r Result) String() string {
	switch r {
	case ResultApplied:
		return "applied"
	case ResultUnchanged:
		return "unchanged"
	case ResultRefused:
		return "refused"
	case ResultStale:
		return "stale"
	}
	return "unknown"
}

// Reason classifies a refusal.
type Reason int

// Reasons of a refusal.
const (
	ReasonNone                Reason = iota
	ReasonInvalidAccessKey           // InvalidAccessKeyId
	ReasonSignatureMismatch          // SignatureDoesNotMatch
	ReasonAccessDenied               // AccessDenied / 403
	ReasonBucketNotFound             // NoSuchBucket
	ReasonEndpointUnreachable        // connection refused, DNS, TLS
	ReasonTimeout                    // no answer within the validation timeout
	ReasonExpiredToken               // ExpiredToken, or an expiration already past
	ReasonInvalidInput               // keys fail the allowlist
	ReasonOther                      // any other S3 error
)

func (r Reason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonInvalidAccessKey:
		return "invalid credentials"
	case ReasonSignatureMismatch:
		return "signature mismatch"
	case ReasonAccessDenied:
		return "access denied"
	case ReasonBucketNotFound:
		return "bucket not found"
	case ReasonEndpointUnreachable:
		return "endpoint unreachable"
	case ReasonTimeout:
		return "timeout"
	case ReasonExpiredToken:
		return "expired token"
	case ReasonInvalidInput:
		return "invalid input"
	}
	return "error"
}

// RefusalError is what a Validator returns for keys that do not work. Its
// message names the host and the S3 error code, never a key.
type RefusalError struct {
	Reason  Reason
	Message string // e.g. "invalid credentials (host=oss.example.com:443, code=InvalidAccessKeyId)"
}

func (e *RefusalError) Error() string { return e.Message }

// Validator checks candidate keys with one cheap signed request.
type Validator interface {
	Validate(ctx context.Context, k keys.Keys) error
}

// Applier puts accepted keys into use for every request signed afterwards.
// It gets the mount's ledger with them, to save both in one piece.
type Applier interface {
	Apply(k keys.Keys, l Ledger)
}

// Request asks for a swap.
type Request struct {
	Keys       keys.Keys
	Source     string // who sent the keys, e.g. "secret", "rrsa", "csi-republish"
	Generation uint64 // when the sender learned the keys (see MaxGenerationAhead); 0 from old senders
}

// Outcome is the answer to a Swap.
type Outcome struct {
	Result      Result
	Reason      Reason
	Message     string    // human-readable; never contains a secret
	Generation  uint64    // the generation in use after the call
	Fingerprint string    // fingerprint of the keys in use after the call
	Time        time.Time // when the call finished
	Source      string
}

// Identity describes the volume a Manager serves; Status echoes it.
type Identity struct {
	VolumeID  string
	Bucket    string
	Prefix    string
	AuthType  string
	SecretRef string // namespace/name of the expected Secret, if any
	RoleARN   string
}

// Status is a snapshot of a Manager.
type Status struct {
	Identity
	Fingerprint string
	Expiration  time.Time
	Generation  uint64
	Last        Outcome // zero before the first Swap
	LastApplied Outcome // the last Swap that changed the keys; zero before one
	StartedAt   time.Time
}

// EventKind tells applied swaps, refused swaps and reports apart.
type EventKind int

// Kinds of events.
const (
	EventApplied EventKind = iota + 1
	EventRefused
	EventReported
)

func (k EventKind) String() string {
	switch k {
	case EventApplied:
		return "applied"
	case EventRefused:
		return "refused"
	case EventReported:
		return "reported"
	case EventStagedDataRetained:
		return "retained"
	}
	return "unknown"
}

// Event is emitted for every applied or refused swap and every Report.
// The node plugin turns it into a Pod Event.
type Event struct {
	// Sequence numbers the events of one Manager: 1, 2, 3, ...
	Sequence    uint64
	Kind        EventKind
	VolumeID    string
	Reason      string // refusal or report reason; empty for applied swaps
	Generation  uint64
	Fingerprint string
	Source      string
	Time        time.Time
	// Keys are the objects of an EventStagedDataRetained.
	Keys []string
}

// Limits on Report input, which comes from another process.
const (
	MaxReasonLen = 1024
	MaxSourceLen = 64
)

// ErrInvalidReport is returned by Report for an empty reason.
var ErrInvalidReport = errors.New("rotation: report reason is empty")

// Manager serialises swaps for one volume.
type Manager struct {
	id        Identity
	validator Validator
	applier   Applier
	now       func() time.Time
	events    chan Event
	startedAt time.Time

	swapMu sync.Mutex // one swap at a time; Status does not wait for it

	mu          sync.Mutex
	current     keys.Keys
	ledger      Ledger
	last        Outcome
	lastApplied Outcome

	// The event log: the most recent events in a ring, the newest
	// sequence, and a channel closed (and replaced) on every new event.
	logMu   sync.Mutex
	ring    []Event
	seq     uint64
	changed chan struct{}
}

// Options configure a Manager.
type Options struct {
	// EventBuffer is the capacity of the Events channel (default 64). When
	// the reader falls behind, the oldest event is dropped, never a swap.
	EventBuffer int
	// EventLog is how many recent events EventsAfter can return (default
	// DefaultEventLog).
	EventLog int
	// Now replaces time.Now in tests.
	Now func() time.Time
	// Ledger is the ledger of the initial keys: zero for a new mount, the
	// saved one for a server that resumes a mount (so a swap of an older
	// generation, or of keys the mount replaced, is still refused).
	Ledger Ledger
}

// New returns a Manager that starts on the initial keys with
// opts.Ledger.
func New(id Identity, initial keys.Keys, v Validator, a Applier, opts Options) *Manager {
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.EventLog <= 0 {
		opts.EventLog = DefaultEventLog
	}
	return &Manager{
		ring:      make([]Event, 0, opts.EventLog),
		changed:   make(chan struct{}),
		id:        id,
		validator: v,
		applier:   a,
		now:       opts.Now,
		events:    make(chan Event, opts.EventBuffer),
		startedAt: opts.Now(),
		current:   initial,
		ledger:    opts.Ledger,
	}
}

// Events delivers every outcome and report. Read it, or events are dropped
// (oldest first) once the buffer is full.
func (m *Manager) Events() <-chan Event { return m.events }

// Swap validates and applies req. It never returns an error: every outcome
// is described by the Outcome, including refusals.
func (m *Manager) Swap(ctx context.Context, req Request) Outcome {
	m.swapMu.Lock()
	defer m.swapMu.Unlock()

	m.mu.Lock()
	current, ledger := m.current, m.ledger
	m.mu.Unlock()

	out := Outcome{Generation: ledger.Generation, Fingerprint: current.Fingerprint(), Source: req.Source}
	adm := admit(out.Fingerprint, req.Keys.Fingerprint(), req.Generation, ledger, m.now())
	switch adm.verdict {
	case verdictAhead:
		return m.refuse(out, ReasonInvalidInput, adm.message)
	case verdictUnchanged:
		out.Result, out.Message = ResultUnchanged, adm.message
		return m.finish(out, false)
	case verdictStale, verdictReplaced:
		out.Result, out.Message = ResultStale, adm.message
		return m.finish(out, false)
	}

	if err := req.Keys.Validate(); err != nil {
		return m.refuse(out, ReasonInvalidInput, err.Error())
	}
	if !req.Keys.Expiration.IsZero() && !req.Keys.Expiration.After(m.now()) {
		return m.refuse(out, ReasonExpiredToken, "keys expired at "+req.Keys.Expiration.UTC().Format(time.RFC3339))
	}
	if err := m.validator.Validate(ctx, req.Keys); err != nil {
		var ref *RefusalError
		if errors.As(err, &ref) {
			return m.refuse(out, ref.Reason, ref.Message)
		}
		// Only RefusalError messages are known to be free of secrets; any
		// other error text stays out of Status and Events.
		return m.refuse(out, ReasonOther, "key validation failed")
	}

	next := ledger.after(out.Fingerprint, adm.gen)
	m.applier.Apply(req.Keys, next)
	m.mu.Lock()
	m.current, m.ledger = req.Keys, next
	m.mu.Unlock()
	out.Result = ResultApplied
	out.Generation = adm.gen
	out.Fingerprint = req.Keys.Fingerprint()
	out.Message = "applied"
	return m.finish(out, true)
}

func (m *Manager) refuse(out Outcome, reason Reason, msg string) Outcome {
	out.Result = ResultRefused
	out.Reason = reason
	out.Message = msg
	return m.finish(out, true)
}

// finish records the outcome as the last one and emits an Event for applied
// and refused swaps.
func (m *Manager) finish(out Outcome, emit bool) Outcome {
	out.Time = m.now()
	m.mu.Lock()
	m.last = out
	if out.Result == ResultApplied {
		m.lastApplied = out
	}
	m.mu.Unlock()
	if emit {
		ev := Event{VolumeID: m.id.VolumeID, Generation: out.Generation, Fingerprint: out.Fingerprint, Source: out.Source, Time: out.Time}
		if out.Result == ResultApplied {
			ev.Kind = EventApplied
		} else {
			ev.Kind = EventRefused
			ev.Reason = out.Message
		}
		m.emit(ev)
	}
	return out
}

// Report records a failure that happened before any swap (for example STS
// refused the token) and emits it as an Event. The reason is cleaned of
// control characters and cut to MaxReasonLen.
func (m *Manager) Report(source, reason string) error {
	reason = Clean(reason, MaxReasonLen)
	if reason == "" {
		return ErrInvalidReport
	}
	m.mu.Lock()
	gen, fp := m.ledger.Generation, m.current.Fingerprint()
	m.mu.Unlock()
	m.emit(Event{Kind: EventReported, VolumeID: m.id.VolumeID, Reason: reason, Generation: gen,
		Fingerprint: fp, Source: Clean(source, MaxSourceLen), Time: m.now()})
	return nil
}

// DefaultEventLog is the default of Options.EventLog.
const DefaultEventLog = 256

// EventsAfter returns the retained events with a sequence above seq, oldest
// first, and a channel that is closed when the next event is recorded. A
// seq above the newest sequence is taken as 0 (the caller knew another
// Manager, e.g. an earlier server process). Use it to follow the events
// without loss or repetition: handle the events, remember the last
// sequence, wait for the channel, call again.
func (m *Manager) EventsAfter(seq uint64) ([]Event, <-chan struct{}) {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	if seq > m.seq {
		seq = 0
	}
	var out []Event
	for _, ev := range m.ring { // ring is kept in order, oldest first
		if ev.Sequence > seq {
			out = append(out, ev)
		}
	}
	return out, m.changed
}

func (m *Manager) emit(ev Event) {
	m.logMu.Lock()
	m.seq++
	ev.Sequence = m.seq
	if len(m.ring) == cap(m.ring) {
		copy(m.ring, m.ring[1:])
		m.ring = m.ring[:len(m.ring)-1]
	}
	m.ring = append(m.ring, ev)
	close(m.changed)
	m.changed = make(chan struct{})
	m.logMu.Unlock()
	for {
		select {
		case m.events <- ev:
			return
		default:
		}
		select { // full: drop the oldest and try again
		case <-m.events:
		default:
		}
	}
}

// Status returns a snapshot.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Status{
		Identity:    m.id,
		Fingerprint: m.current.Fingerprint(),
		Expiration:  m.current.Expiration,
		Generation:  m.ledger.Generation,
		Last:        m.last,
		LastApplied: m.lastApplied,
		StartedAt:   m.startedAt,
	}
}

// Clean replaces control characters with spaces, trims and cuts s to at
// most max bytes on a rune boundary. It makes text from other processes safe
// for logs and Events.
func Clean(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
