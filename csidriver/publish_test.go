package csidriver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func TestPublishDecision(t *testing.T) {
	for _, c := range []struct {
		name                            string
		found, dead, mounted, corrupted bool
		want                            publishAction
	}{
		{"new target", false, false, false, false, publishMount},
		{"live mount", true, false, true, false, publishRepublish},
		{"live server, slow stat", true, false, true, true, publishRepublish},
		{"dead server, mount left", true, true, true, true, publishMount},
		{"dead server, not mounted", true, true, false, false, publishMount},
		{"listed, not mounted", true, false, false, false, publishMount},
		{"stale mount after a reboot", false, false, true, true, publishMount},
		{"live mount being handed over", false, false, true, false, publishRetry},
	} {
		if got := publishDecision(c.found, c.dead, c.mounted, c.corrupted); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestTargetLocks: calls for one target run one at a time, calls for
// others do not wait for them, and no lock is left once they are done.
func TestTargetLocks(t *testing.T) {
	var l targetLocks
	var wg sync.WaitGroup
	inside := map[string]*atomic.Int32{}
	for i := range 50 {
		inside[fmt.Sprint("t", i%5)] = &atomic.Int32{}
	}
	for i := range 500 {
		target := fmt.Sprint("t", i%5)
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := l.lock(target)
			if n := inside[target].Add(1); n != 1 {
				t.Errorf("%d calls inside %s at once", n, target)
			}
			inside[target].Add(-1)
			unlock()
		}()
	}
	// A call for another target goes through while t0 is held.
	unlock := l.lock("t0")
	done := make(chan struct{})
	go func() { l.lock("other")(); close(done) }()
	<-done
	unlock()
	wg.Wait()
	if n := l.held(); n != 0 {
		t.Errorf("%d target locks left", n)
	}
}
