package rekeyctl

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Command is one invocation of status or wait.
type Command struct {
	Name     string // "status" or "wait"
	Lister   *Lister
	Scope    Scope // Namespace "" is all namespaces
	Timeout  time.Duration
	Interval time.Duration
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
	}
	return fmt.Errorf("%w: unknown command %q", ErrUsage, c.Name)
}
