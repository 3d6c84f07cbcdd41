package sidecar

import (
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"rekey.dev/rekey/fuseserver/control"
	"rekey.dev/rekey/internal/keys"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// serverClient is the sidecar's connection to one FUSE server's control
// socket.
type serverClient struct {
	api    credentialsv1.CredentialServiceClient
	closer io.Closer
}

// dialServer connects lazily to the control socket at path (see
// control.Dial: plaintext over a 0600 unix socket, UNAVAILABLE retried a
// few times). Reconnection backoff is kept short so that a restarted server
// is reached again within seconds.
func dialServer(path string) (*serverClient, error) {
	api, closer, err := control.Dial(path, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}))
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	return &serverClient{api: api, closer: closer}, nil
}

func (c *serverClient) Close() error { return c.closer.Close() }

func (c *serverClient) status(ctx context.Context) (*credentialsv1.StatusResponse, error) {
	return c.api.Status(ctx, &credentialsv1.StatusRequest{})
}

func (c *serverClient) swap(ctx context.Context, k keys.Keys, source string, gen uint64) (*credentialsv1.SwapResponse, error) {
	req := &credentialsv1.SwapRequest{
		AccessKeyId:     k.AccessKeyID,
		SecretAccessKey: k.SecretAccessKey,
		SessionToken:    k.SessionToken,
		Source:          source,
		Generation:      gen,
	}
	if !k.Expiration.IsZero() {
		req.Expiration = timestamppb.New(k.Expiration)
	}
	return c.api.Swap(ctx, req)
}

func (c *serverClient) report(ctx context.Context, volumeID, source, reason string) error {
	_, err := c.api.Report(ctx, &credentialsv1.ReportRequest{VolumeId: volumeID, Source: source, Reason: reason})
	return err
}

// retryable reports whether an RPC error may go away by itself: the server
// is not (yet, or any more) there, or did not answer in time.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

// transientRefusal reports whether a refused swap may succeed if retried
// with the same keys: S3 could not be reached or did not answer in time.
func transientRefusal(r credentialsv1.SwapReason) bool {
	return r == credentialsv1.SwapReason_SWAP_REASON_ENDPOINT_UNREACHABLE || r == credentialsv1.SwapReason_SWAP_REASON_TIMEOUT
}

// resultName is the short name of a swap result for logs and metrics.
func resultName(r credentialsv1.SwapResult) string {
	switch r {
	case credentialsv1.SwapResult_SWAP_RESULT_APPLIED:
		return "applied"
	case credentialsv1.SwapResult_SWAP_RESULT_UNCHANGED:
		return "unchanged"
	case credentialsv1.SwapResult_SWAP_RESULT_REFUSED:
		return "refused"
	case credentialsv1.SwapResult_SWAP_RESULT_STALE:
		return "stale"
	}
	return "unspecified"
}
