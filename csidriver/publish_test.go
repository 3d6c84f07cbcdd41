package csidriver

import "testing"

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
