package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"rekey.dev/rekey/fuseserver/rotation"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// serviceConfig makes every CredentialService call fail fast while the
// server is not there (waitForReady false: the caller decides when to try
// again, for example on the next key change or after a server restart) and
// retries UNAVAILABLE a few times with backoff, which covers a server that
// is restarting or whose socket is being replaced.
//
// All three methods are retried. Status and Report are safe to repeat, and
// so is Swap: a retried Swap carries the same keys and generation, and a
// server that already applied them answers SWAP_RESULT_UNCHANGED; one that
// has newer keys answers SWAP_RESULT_STALE. Keys are never rolled back.
const serviceConfig = `{
  "methodConfig": [{
    "name": [{"service": "rekey.credentials.v1.CredentialService"}],
    "waitForReady": false,
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Dial returns the generated client of the control socket at path and the
// closer of its connection, for callers that need the raw protocol (the
// supervisor's event stream, tests). Senders of keys use NewClient. It does
// not connect yet; the first RPC does. opts are added after the defaults.
//
// The transport is plaintext on purpose: the socket never leaves the
// machine, its file mode (0600, owned by the sidecar's UID) keeps other
// users from connecting, and the server checks every peer's UID with
// SO_PEERCRED. TLS would add certificates to rotate and nothing to trust.
func Dial(path string, opts ...grpc.DialOption) (credentialsv1.CredentialServiceClient, io.Closer, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}, opts...)
	conn, err := grpc.NewClient("unix:"+path, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("control: dial %s: %w", path, err)
	}
	return credentialsv1.NewCredentialServiceClient(conn), conn, nil
}

// Client is the sending side of the protocol: the sidecar and the node
// plugin push keys, read Status and send Reports through it, in the domain
// types of package rotation. The mapping to and from the protocol is the
// one in convert.go, shared with the server.
type Client struct {
	api    credentialsv1.CredentialServiceClient
	closer io.Closer
}

// NewClient returns a Client of the control socket at path (see Dial).
func NewClient(path string, opts ...grpc.DialOption) (*Client, error) {
	api, closer, err := Dial(path, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{api: api, closer: closer}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.closer.Close() }

// ErrUntrustedServer is returned for a socket whose server does not run as
// one of the UIDs a client trusts (see WithServerUIDs).
var ErrUntrustedServer = errors.New("control: the socket's server runs as an untrusted UID")

// CheckServer connects to the socket at path once and checks with
// SO_PEERCRED that the process serving it runs as one of uids; the error
// wraps ErrUntrustedServer if it does not.
func CheckServer(ctx context.Context, path string, uids []uint32) (Peer, error) {
	conn, p, err := dialTrusted(ctx, path, uids)
	if err != nil {
		return p, fmt.Errorf("control: connect %s: %w", path, err)
	}
	_ = conn.Close()
	return p, nil
}

// dialTrusted connects to path and returns the connection if the server
// runs as one of uids (SO_PEERCRED), else closes it; the peer is returned
// whenever it was read.
func dialTrusted(ctx context.Context, path string, uids []uint32) (net.Conn, Peer, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
	if err != nil {
		return nil, Peer{}, err
	}
	p, err := peerCredentials(conn)
	if err == nil && !slices.Contains(uids, p.UID) {
		err = fmt.Errorf("%w: uid %d, pid %d", ErrUntrustedServer, p.UID, p.PID)
	}
	if err != nil {
		_ = conn.Close()
		return nil, p, err
	}
	return conn, p, nil
}

// WithServerUIDs makes a Client connect only to a server that runs as one
// of uids, checked with SO_PEERCRED on every connection before anything is
// sent: a client that hands over keys must know it talks to the FUSE
// server the node plugin started, not to whoever put a socket at the path.
func WithServerUIDs(path string, uids []uint32) grpc.DialOption {
	uids = slices.Clone(uids)
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		conn, _, err := dialTrusted(ctx, path, uids)
		return conn, err
	})
}

// TrustedServerUIDs are the UIDs the node plugin's FUSE servers run as,
// seen from this process: root, or, inside a user namespace that does not
// map the host's root (a pod with hostUsers: false), the overflow UID the
// kernel shows for unmapped IDs.
func TrustedServerUIDs() []uint32 {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil || mapsHostRoot(string(b)) {
		return []uint32{0}
	}
	overflow := uint32(65534)
	if o, err := os.ReadFile("/proc/sys/kernel/overflowuid"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(o)), 10, 32); err == nil {
			overflow = uint32(v)
		}
	}
	return []uint32{overflow}
}

// mapsHostRoot reports whether a uid_map maps the outer UID 0 to some UID
// of this namespace.
func mapsHostRoot(uidMap string) bool {
	for _, line := range strings.Split(strings.TrimSpace(uidMap), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		outer, err1 := strconv.ParseUint(f[1], 10, 32)
		n, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 == nil && err2 == nil && outer == 0 && n > 0 {
			return true
		}
	}
	return false
}

// ServerStatus is a server's Status: the rotation.Status it reports and
// the process that serves it.
type ServerStatus struct {
	rotation.Status
	// PID is the server's process ID in its own PID namespace. With
	// StartedAt it tells a client that the server was replaced.
	PID int32
}

// Swap pushes keys. A refused or stale swap is an Outcome, not an error;
// errors are RPC failures (see Retryable).
func (c *Client) Swap(ctx context.Context, req rotation.Request) (rotation.Outcome, error) {
	resp, err := c.api.Swap(ctx, swapToProto(req))
	if err != nil {
		return rotation.Outcome{}, fmt.Errorf("control: swap: %w", err)
	}
	return outcomeFromProto(resp, req.Source, time.Now()), nil
}

// Status reads the server's status.
func (c *Client) Status(ctx context.Context) (ServerStatus, error) {
	resp, err := c.api.Status(ctx, &credentialsv1.StatusRequest{})
	if err != nil {
		return ServerStatus{}, fmt.Errorf("control: status: %w", err)
	}
	return statusFromProto(resp), nil
}

// Report sends a failure that happened before any swap.
func (c *Client) Report(ctx context.Context, volumeID, source, reason string) error {
	if _, err := c.api.Report(ctx, &credentialsv1.ReportRequest{VolumeId: volumeID, Source: source, Reason: reason}); err != nil {
		return fmt.Errorf("control: report: %w", err)
	}
	return nil
}

// Retryable reports whether an error of a Client call may go away by
// itself: the server is not (yet, or any more) there, or did not answer in
// time. INVALID_ARGUMENT and other refusals of the request are final. It
// sees through wrapping (status.Code does).
func Retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

// Code is the gRPC code of an error of a Client call, for logs.
func Code(err error) string { return status.Code(err).String() }

// TransientRefusal reports whether a refused swap may succeed if retried
// with the same keys: S3 could not be reached or did not answer in time.
func TransientRefusal(r rotation.Reason) bool {
	return r == rotation.ReasonEndpointUnreachable || r == rotation.ReasonTimeout
}
