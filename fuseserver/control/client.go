package control

import (
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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

// Dial returns a client of the control socket at path and the closer of
// its connection. It does not connect yet; the first RPC does. opts are
// added after the defaults (tests use them).
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
