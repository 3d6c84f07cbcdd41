package sidecar

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"rekey.dev/rekey/fuseserver/control"
)

// dialServer returns a client of the control socket at path (see
// control.NewClient: plaintext over a 0600 unix socket, UNAVAILABLE retried
// a few times) that connects only to a server running as one of
// serverUIDs. It connects lazily. Reconnection backoff is kept short so
// that a restarted server is reached again within seconds.
func dialServer(path string, serverUIDs []uint32) (*control.Client, error) {
	c, err := control.NewClient(path, control.WithServerUIDs(path, serverUIDs), grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}))
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	return c, nil
}
