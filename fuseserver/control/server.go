package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"rekey.dev/rekey/fuseserver/rotation"
	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// Manager is what the server needs of a *rotation.Manager.
type Manager interface {
	// Swap validates and applies keys; every outcome, refusals included,
	// is described by the returned Outcome.
	Swap(ctx context.Context, req rotation.Request) rotation.Outcome
	// Status returns a snapshot.
	Status() rotation.Status
	// Report records a failure that happened before any swap.
	Report(source, reason string) error
	// EventsAfter returns the retained events after seq and a channel
	// closed on the next event.
	EventsAfter(seq uint64) ([]rotation.Event, <-chan struct{})
}

var _ Manager = (*rotation.Manager)(nil)

// maxRecvMsgSize bounds a request: the largest valid keys (about 17.5 KiB)
// plus room for the other fields. gRPC's default of 4 MiB is far more than
// any honest client sends.
const maxRecvMsgSize = 64 << 10

// Defaults of Options.
const (
	DefaultGracePeriod = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Log receives one line per RPC (V(1) for successful ones) and
	// refusals. The zero value discards.
	Log logr.Logger
	// PID is reported by Status; 0 means os.Getpid().
	PID int
	// GracePeriod bounds how long Serve waits for RPCs in flight (a Swap
	// may be validating keys against S3) after its context is cancelled,
	// before it closes their connections. 0 means DefaultGracePeriod.
	GracePeriod time.Duration
}

// Server serves CredentialService for one Manager.
type Server struct {
	grpc     *grpc.Server
	grace    time.Duration
	stopping chan struct{} // closed when Serve's context ends: event streams return
	stopOnce sync.Once
}

// NewServer returns a Server for m. Call Serve to start it.
func NewServer(m Manager, opts Options) *Server {
	if opts.PID == 0 {
		opts.PID = os.Getpid()
	}
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(loggingInterceptor(opts.Log)),
		grpc.StreamInterceptor(streamLoggingInterceptor(opts.Log)),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
	)
	srv := &Server{grpc: gs, grace: opts.GracePeriod, stopping: make(chan struct{})}
	credentialsv1.RegisterCredentialServiceServer(gs, &service{m: m, pid: int32(opts.PID), stopping: srv.stopping})
	return srv
}

func (s *Server) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// Serve serves connections accepted on lis until ctx is cancelled, then
// stops gracefully: it stops accepting, lets RPCs in flight finish for at
// most the grace period, closes lis (Listen's listeners remove their socket
// file then) and returns nil. It also returns nil after Stop. Call Serve
// once per Server.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("control: serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	s.stop() // event streams never end by themselves
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.grpc.Stop()
		<-done
	}
	<-errc //nolint:errcheck // after a stop, Serve's own error (closed listener) says nothing new
	return nil
}

// Stop closes the listener and every connection at once, failing RPCs in
// flight. Serve returns nil afterwards.
func (s *Server) Stop() { s.stop(); s.grpc.Stop() }

// service implements the generated interface; it is unexported so the
// Server's API stays Serve and Stop.
type service struct {
	credentialsv1.UnimplementedCredentialServiceServer
	m        Manager
	pid      int32
	stopping <-chan struct{}
}

var _ credentialsv1.CredentialServiceServer = (*service)(nil)

// Swap implements CredentialService.Swap.
func (s *service) Swap(ctx context.Context, req *credentialsv1.SwapRequest) (*credentialsv1.SwapResponse, error) {
	r, err := parseSwap(req)
	if err != nil {
		return nil, grpcError(err)
	}
	out := s.m.Swap(ctx, r)
	return &credentialsv1.SwapResponse{
		Result:      resultToProto(out.Result),
		Reason:      reasonToProto(out.Reason),
		Message:     scrub(out.Message, req),
		Generation:  out.Generation,
		Fingerprint: out.Fingerprint,
	}, nil
}

// Status implements CredentialService.Status.
func (s *service) Status(context.Context, *credentialsv1.StatusRequest) (*credentialsv1.StatusResponse, error) {
	st := s.m.Status()
	resp := &credentialsv1.StatusResponse{
		VolumeId:    st.VolumeID,
		Bucket:      st.Bucket,
		Prefix:      st.Prefix,
		AuthType:    st.AuthType,
		SecretRef:   st.SecretRef,
		RoleArn:     st.RoleARN,
		Fingerprint: st.Fingerprint,
		Expiration:  timestamp(st.Expiration),
		Generation:  st.Generation,
		StartedAt:   timestamp(st.StartedAt),
		Pid:         s.pid,
	}
	resp.LastSwap = lastSwapToProto(st.Last)
	resp.LastApplied = lastSwapToProto(st.LastApplied)
	return resp, nil
}

// lastSwapToProto converts a recorded outcome; nil if there is none.
func lastSwapToProto(o rotation.Outcome) *credentialsv1.LastSwap {
	if o.Time.IsZero() {
		return nil
	}
	return &credentialsv1.LastSwap{
		Result:  resultToProto(o.Result),
		Reason:  reasonToProto(o.Reason),
		Message: o.Message,
		Time:    timestamp(o.Time),
		Source:  o.Source,
	}
}

// Report implements CredentialService.Report.
func (s *service) Report(_ context.Context, req *credentialsv1.ReportRequest) (*credentialsv1.ReportResponse, error) {
	source, reason, err := parseReport(req, s.m.Status().VolumeID)
	if err != nil {
		return nil, grpcError(err)
	}
	if err := s.m.Report(source, reason); err != nil {
		return nil, grpcError(fmt.Errorf("control: report: %w", err))
	}
	return &credentialsv1.ReportResponse{}, nil
}

// WatchEvents implements CredentialService.WatchEvents.
func (s *service) WatchEvents(req *credentialsv1.WatchEventsRequest, stream credentialsv1.CredentialService_WatchEventsServer) error {
	after := req.GetAfterSequence()
	for {
		evs, next := s.m.EventsAfter(after)
		for _, ev := range evs {
			if err := stream.Send(&credentialsv1.WatchEventsResponse{Event: eventToProto(ev)}); err != nil {
				return fmt.Errorf("control: send event: %w", err)
			}
			after = ev.Sequence
		}
		select {
		case <-next:
		case <-stream.Context().Done():
			return grpcError(stream.Context().Err())
		case <-s.stopping:
			return status.Error(codes.Unavailable, "server stopping")
		}
	}
}

// grpcError chooses the gRPC code of an error; it is the only place codes
// are chosen. Messages of invalid-argument errors are built by this
// package and hold field names, never values.
func grpcError(err error) error {
	switch {
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, rotation.ErrInvalidReport):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
