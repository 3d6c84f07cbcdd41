package csidriver

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/contract"
)

// NewEventRecorder returns a client-go event recorder posting to the API
// server as component "rekey-csi" on node nodeID, and its stop function.
func NewEventRecorder(cs kubernetes.Interface, nodeID string) (record.EventRecorder, func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "rekey-csi", Host: nodeID}), b.Shutdown
}

// eventPoster turns FUSE server outcomes into Events on the consuming pod.
// CredentialRefreshed is rate-limited to one per volume and pod per
// refreshedEvery; Warnings are not (client-go aggregates repeats).
type eventPoster struct {
	rec            record.EventRecorder // nil: log only
	log            logr.Logger
	metrics        *Metrics
	status         *keyStatus // nil: no keyed fingerprints, status objects or key state gauges
	refreshedEvery time.Duration

	mu   sync.Mutex
	last map[string]time.Time
}

func podRef(s supervisor.Spec) *corev1.ObjectReference {
	if s.PodName == "" || s.PodNamespace == "" {
		return nil
	}
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Name: s.PodName, Namespace: s.PodNamespace, UID: types.UID(s.PodUID)}
}

func (p *eventPoster) post(s supervisor.Spec, eventType, reason, msg string) {
	p.log.Info("event", "type", eventType, "reason", reason, "message", msg, "volumeId", s.VolumeID,
		"pod", s.PodNamespace+"/"+s.PodName)
	if ref := podRef(s); ref != nil && p.rec != nil {
		p.rec.Event(ref, eventType, reason, msg)
	}
}

func (p *eventPoster) refreshFailed(s supervisor.Spec, reason string) {
	p.status.refused(s, reason)
	p.post(s, corev1.EventTypeWarning, contract.EventReasonRefreshFailed,
		fmt.Sprintf(contract.EventMessageFailedFormat, s.VolumeID, reason))
}

func (p *eventPoster) refreshed(s supervisor.Spec, fingerprint, source string) {
	key := s.PodUID + "/" + s.VolumeID
	p.mu.Lock()
	if p.last == nil {
		p.last = map[string]time.Time{}
	}
	if t, ok := p.last[key]; ok && time.Since(t) < p.refreshedEvery {
		p.mu.Unlock()
		return
	}
	p.last[key] = time.Now()
	p.mu.Unlock()
	p.post(s, corev1.EventTypeNormal, contract.EventReasonRefreshed,
		fmt.Sprintf("refreshed ak/sk for %s, key %s (source %s)", s.VolumeID, fingerprint, source))
}

// Handle posts the Event for one supervisor Event.
func (p *eventPoster) Handle(ev supervisor.Event) {
	switch ev.Kind {
	case "applied":
		p.metrics.keySet(ev.Spec.VolumeID)
		fp, exp := p.status.eventFingerprint(ev)
		p.status.applied(ev, fp, exp)
		p.refreshed(ev.Spec, fp, ev.Source)
	case "refused", "reported":
		if ev.Source == republishSource || ev.Source == stsSource(contract.AuthTypeRRSA) || ev.Source == stsSource(contract.AuthTypeIRSA) {
			return // the republish itself posted it (and recorded it in the status)
		}
		p.refreshFailed(ev.Spec, ev.Reason)
	case supervisor.EventResumed:
		p.metrics.serverResumes.Inc()
		p.status.resumed(ev)
		p.post(ev.Spec, corev1.EventTypeNormal, contract.EventReasonFUSEServerResumed,
			fmt.Sprintf(contract.EventMessageFUSEServerResumedFormat, ev.Spec.VolumeID, ev.Reason))
	case supervisor.EventDied:
		p.metrics.serverDeaths.Inc()
		p.post(ev.Spec, corev1.EventTypeWarning, contract.EventReasonFUSEServerDied,
			fmt.Sprintf(contract.EventMessageFUSEServerDiedFormat, ev.Spec.VolumeID, ev.Reason))
	case supervisor.EventStagedDataRetained:
		p.post(ev.Spec, corev1.EventTypeWarning, contract.EventReasonStagedDataRetained, retainedMessage(ev))
	}
}

// maxRetainedInMessage bounds the keys named in a StagedDataRetained
// Event (the API server cuts messages at 1 KiB); the log has them all.
const maxRetainedInMessage = 10

func retainedMessage(ev supervisor.Event) string {
	keys := ev.Keys
	more := ""
	if len(keys) > maxRetainedInMessage {
		keys, more = keys[:maxRetainedInMessage], fmt.Sprintf(" and %d more", len(ev.Keys)-maxRetainedInMessage)
	}
	return fmt.Sprintf(contract.EventMessageStagedDataRetainedFormat, ev.Spec.VolumeID, len(ev.Keys), ev.Reason,
		strings.Join(keys, ", ")+more)
}

// watchEvents feeds Events from a supervisor Client (reconnecting) or an
// in-process Supervisor until ctx ends;
// connected runs each time a supervisor Client's stream is established.
func (p *eventPoster) watchEvents(ctx context.Context, r Runner, connected func()) {
	switch r := r.(type) {
	case *supervisor.Client:
		r.WatchForever(ctx, p.Handle, connected, p.log)
	case *supervisor.Supervisor:
		ch, cancel := r.Subscribe()
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-ch:
				p.Handle(ev)
			}
		}
	}
}
