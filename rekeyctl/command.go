package rekeyctl

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Command is one invocation of status or wait.
type Command struct {
	Name     string // "status", "wait" or "rotate"
	Lister   *Lister
	Scope    Scope // Namespace "" is all namespaces
	Timeout  time.Duration
	Interval time.Duration
	Entries  map[string][]byte // rotate: the Secret entries to set
	Out      io.Writer
	Now      func() time.Time
}

// Run runs the command.
func Run(ctx context.Context, c Command) error {
	switch c.Name {
	case "status":
		ms, err := c.Lister.Mounts(ctx, c.Scope)
		if err != nil {
			return err
		}
		return WriteTable(c.Out, ms, c.Scope.Namespace == "", c.Now())
	case "wait":
		_, err := c.Lister.Wait(ctx, WaitOptions{Secret: c.Scope.Secret, Namespace: c.Scope.Namespace, Timeout: c.Timeout,
			Interval: c.Interval, Out: c.Out})
		return err
	case "rotate":
		_, err := c.Lister.Rotate(ctx, RotateOptions{Entries: c.Entries, WaitOptions: WaitOptions{Secret: c.Scope.Secret,
			Namespace: c.Scope.Namespace, Timeout: c.Timeout, Interval: c.Interval, Out: c.Out}})
		return err
	}
	return fmt.Errorf("%w: unknown command %q", ErrUsage, c.Name)
}
