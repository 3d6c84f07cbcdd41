package fusetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"rekey.dev/rekey/internal/loadcheck"
)

// RotateUnderLoad runs the loads until duration has passed and meanwhile
// rotates keys with rot every interval; a failed rotation is a test error.
// It returns what the loads did and how long each successful rotation took.
func RotateUnderLoad(t testing.TB, rot *loadcheck.Rotator, interval, duration time.Duration, loads ...loadcheck.Load) (*loadcheck.Stats, []time.Duration) {
	t.Helper()
	st := &loadcheck.Stats{}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Run(ctx, st)
		}()
	}
	var took []time.Duration
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return st, took
		case <-tick.C:
			d, err := rot.Rotate(context.Background())
			if err != nil {
				t.Errorf("rotation %d: %v", len(took)+1, err)
				continue
			}
			took = append(took, d)
		}
	}
}
