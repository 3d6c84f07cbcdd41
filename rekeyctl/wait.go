package rekeyctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Progress is how far the mounts of one Secret are.
type Progress struct {
	Secret      string
	Fingerprint string // of the Secret's current content
	Total       int
	Current     int
	Waiting     []Mount // not on the current keys, in table order
}

// Check computes the progress of ms, the mounts of Secret secret whose
// current content has fingerprint fp.
func Check(secret, fp string, ms []Mount) Progress {
	p := Progress{Secret: secret, Fingerprint: fp, Total: len(ms)}
	for _, m := range ms {
		if m.HasStatus && m.Fingerprint != "" && m.Fingerprint == fp {
			p.Current++
		} else {
			p.Waiting = append(p.Waiting, m)
		}
	}
	return p
}

// Done reports whether every mount runs the current keys.
func (p Progress) Done() bool { return len(p.Waiting) == 0 }

// maxNamed bounds the laggards named on one progress line.
const maxNamed = 5

// Line is one progress line:
//
//	12/14 mounts on AKID:f00d..., waiting for 2: ns/pod (volume, on AKID:0123...), ns/pod2 (volume, no status yet)
func (p Progress) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d mounts on %s", p.Current, p.Total, p.Fingerprint)
	if p.Done() {
		return b.String()
	}
	fmt.Fprintf(&b, ", waiting for %d: ", len(p.Waiting))
	for i, m := range p.Waiting {
		if i == maxNamed {
			fmt.Fprintf(&b, ", and %d more", len(p.Waiting)-maxNamed)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s/%s (%s, %s)", m.Namespace, m.Pod, m.Volume, laggard(m))
	}
	return b.String()
}

func laggard(m Mount) string {
	switch {
	case !m.HasStatus:
		return "no status yet"
	case m.Fingerprint == "":
		return "keys not reported yet"
	}
	s := "on " + m.Fingerprint
	if m.LastError != "" {
		s += ", last error: " + cut(m.LastError, maxErrorWidth)
	}
	return s
}

// NotSafeError is Wait's error when the timeout passed first.
type NotSafeError struct {
	Progress Progress
	After    time.Duration
}

func (e *NotSafeError) Error() string {
	names := make([]string, 0, len(e.Progress.Waiting))
	for _, m := range e.Progress.Waiting {
		names = append(names, fmt.Sprintf("%s/%s (%s, %s, node %s)", m.Namespace, m.Pod, m.Volume, laggard(m), m.Node))
	}
	return fmt.Sprintf("not safe to revoke: after %s, %d of %d mounts of Secret %s do not run its current keys %s: %s",
		e.After.Round(time.Second), len(e.Progress.Waiting), e.Progress.Total, e.Progress.Secret, e.Progress.Fingerprint,
		strings.Join(names, "; "))
}

// WaitOptions configure Wait.
type WaitOptions struct {
	Secret    string // "namespace/name"
	Namespace string // pods' namespace; "" for all
	Timeout   time.Duration
	Interval  time.Duration
	Out       io.Writer
}

// Wait polls until every mount of the Secret runs the keys of its current
// content, printing a progress line whenever it changes. It returns a
// *NotSafeError when the timeout passes first, and other errors for what
// makes the question unanswerable (no CRD, no permission, no Secret).
func (l *Lister) Wait(ctx context.Context, o WaitOptions) (Progress, error) {
	if _, _, err := SplitRef(o.Secret); err != nil {
		return Progress{}, err
	}
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	start := time.Now()
	deadline := start.Add(o.Timeout)
	last := ""
	for {
		key, err := l.clusterKey(ctx)
		if err != nil {
			return Progress{}, err
		}
		fp, err := l.SecretFingerprint(ctx, o.Secret, key)
		if err != nil {
			return Progress{}, err
		}
		ms, err := l.Mounts(ctx, Scope{Namespace: o.Namespace, Secret: o.Secret})
		if err != nil {
			return Progress{}, err
		}
		p := Check(o.Secret, fp, ms)
		if line := p.Line(); line != last {
			fmt.Fprintf(o.Out, "%s\n", line)
			last = line
		}
		if p.Done() {
			if p.Total == 0 {
				fmt.Fprintf(o.Out, "no running pod mounts Secret %s: safe to revoke its old keys\n", o.Secret)
			} else {
				fmt.Fprintf(o.Out, "all %d mounts of Secret %s run its current keys %s: safe to revoke the old ones\n", p.Total, o.Secret, fp)
			}
			return p, nil
		}
		if o.Timeout > 0 && !time.Now().Before(deadline) {
			return p, &NotSafeError{Progress: p, After: time.Since(start)}
		}
		select {
		case <-ctx.Done():
			return p, errors.Join(ctx.Err(), &NotSafeError{Progress: p, After: time.Since(start)})
		case <-time.After(o.Interval):
		}
	}
}
