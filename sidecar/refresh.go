package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"rekey.dev/rekey/internal/keys"
	"rekey.dev/rekey/internal/sts"
)

// maxTokenFileSize bounds a projected service-account token.
const maxTokenFileSize = 64 << 10

// defaultLifetime is assumed for temporary keys that come without an
// expiration (STS always sends one; this is a guard).
const defaultLifetime = time.Hour

// RefreshAt returns when keys obtained at obtained and expiring at expires
// should be refreshed: at 80 % of their lifetime or margin before expiry,
// whichever is earlier, but never in the first half of the lifetime (so a
// margin longer than the lifetime does not cause a refresh loop).
func RefreshAt(obtained, expires time.Time, margin time.Duration) time.Time {
	if expires.IsZero() {
		return obtained.Add(defaultLifetime * 8 / 10)
	}
	life := expires.Sub(obtained)
	if life <= 0 {
		return obtained
	}
	at := min(life*8/10, life-margin)
	at = max(at, life/2)
	return obtained.Add(at)
}

// Backoff is a jittered exponential backoff: each Next doubles the base
// delay from Min up to Max and returns a delay drawn from [base/2, base].
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.n++
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1) //nolint:gosec // jitter needs no cryptographic randomness
}

// Reset starts over at Min.
func (b *Backoff) Reset() { b.n = 0 }

// Refresher keeps one volume's temporary keys fresh: it reads the
// projected service-account token (again on every attempt, kubelet rotates
// it), exchanges it at STS, publishes the keys, and schedules the next
// refresh with RefreshAt. On failure it retries with Backoff, keeps the old
// keys in use (it publishes nothing) until they really expire, and reports:
// at once when it has no keys yet or STS refused the token for good, and at
// expiry when an outage outlasts the keys. Identical reasons are reported
// once until something succeeds.
type Refresher struct {
	Source    string // rrsa or irsa, for logs, metrics and reports
	TokenFile string
	STS       Assumer
	Clock     clock.Clock
	Margin    time.Duration
	Backoff   Backoff

	Publish func(k keys.Keys, obtained time.Time)
	Fail    func(reason string)
	// Observe, if set, is told about every STS call: its duration and error.
	Observe func(d time.Duration, err error)
	Log     logr.Logger

	kick     chan struct{}
	current  keys.Keys
	reported string
}

// TokenChanged tells the refresher that the token file changed. It retries
// at once if the last attempt failed; working keys are refreshed on their
// schedule. It never blocks.
func (r *Refresher) TokenChanged() {
	select {
	case r.kickChan() <- struct{}{}:
	default:
	}
}

func (r *Refresher) kickChan() chan struct{} {
	if r.kick == nil {
		r.kick = make(chan struct{}, 1)
	}
	return r.kick
}

// Init prepares the refresher; call it before Start and TokenChanged run
// concurrently.
func (r *Refresher) Init() { r.kickChan() }

// Start runs until ctx ends and returns nil then.
func (r *Refresher) Start(ctx context.Context) error {
	kick := r.kickChan()
	failing := false
	next := r.Clock.Now()
	for {
		wait := next.Sub(r.Clock.Now())
		if wait > 0 {
			t := r.Clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-kick:
				t.Stop()
				if !failing {
					continue // keys work; keep the schedule
				}
			case <-t.C():
			}
		}
		if stopped(ctx) {
			return nil
		}
		k, err := r.attempt(ctx)
		if stopped(ctx) {
			return nil
		}
		now := r.Clock.Now()
		if err == nil {
			failing = false
			r.reported = ""
			r.Backoff.Reset()
			r.current = k
			r.Publish(k, now)
			next = RefreshAt(now, k.Expiration, r.Margin)
			// A little jitter so that pods started together do not
			// refresh together: up to 5 % earlier.
			if span := next.Sub(now) / 20; span > 0 {
				next = next.Add(-rand.N(span)) //nolint:gosec // jitter needs no cryptographic randomness
			}
			r.Log.V(1).Info("temporary keys obtained", "source", r.Source, "fingerprint", k.Fingerprint(),
				"expiration", k.Expiration, "nextRefresh", next)
			continue
		}

		failing = true
		delay := r.Backoff.Next()
		expired := r.current.IsZero() || (!r.current.Expiration.IsZero() && !now.Before(r.current.Expiration))
		r.Log.Error(err, "STS exchange failed; retrying", "source", r.Source, "retryIn", delay, "keysExpired", expired)
		switch {
		case r.current.IsZero(), sts.IsRefusal(err), errors.Is(err, errToken):
			r.report(errorKind(err), err.Error())
		case expired:
			r.report("expired/"+errorKind(err), fmt.Sprintf("temporary keys expired at %s and could not be refreshed: %v",
				r.current.Expiration.UTC().Format(time.RFC3339), err))
		case r.current.Expiration.Sub(now) < delay:
			// Wake up at expiry to report it on time.
			delay = r.current.Expiration.Sub(now)
		}
		next = now.Add(delay)
	}
}

var errToken = errors.New("sidecar: service-account token")

func (r *Refresher) attempt(ctx context.Context) (keys.Keys, error) {
	token, err := readToken(r.TokenFile)
	if err != nil {
		return keys.Keys{}, err
	}
	start := r.Clock.Now()
	k, err := r.STS.Assume(ctx, token)
	if r.Observe != nil && ctx.Err() == nil {
		r.Observe(r.Clock.Since(start), err)
	}
	return k, err
}

// report passes reason on unless a failure of the same kind was reported
// since the last success: a long outage makes one Event, not one per retry.
func (r *Refresher) report(kind, reason string) {
	if kind == r.reported {
		return
	}
	r.reported = kind
	r.Fail(reason)
}

// errorKind classifies err for report's deduplication.
func errorKind(err error) string {
	var se *sts.Error
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("sts/%d/%s", se.StatusCode, se.Code)
	case errors.Is(err, errToken):
		return "token"
	case errors.Is(err, sts.ErrResponse):
		return "response"
	}
	return "transport"
}

// readToken reads a projected service-account token. The error names the
// file, never its content.
func readToken(path string) (string, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return "", fmt.Errorf("%w: %w", errToken, err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileSize+1))
	if err != nil {
		return "", fmt.Errorf("%w: read %s: %w", errToken, path, err)
	}
	if len(b) > maxTokenFileSize {
		return "", fmt.Errorf("%w: %s is larger than %d bytes", errToken, path, maxTokenFileSize)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%w: %s is empty", errToken, path)
	}
	return t, nil
}

// stopped reports whether ctx has ended.
func stopped(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}
