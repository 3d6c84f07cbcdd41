package control

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	credentialsv1 "rekey.dev/rekey/proto/rekey/credentials/v1"
)

// redactedValue replaces a secret in logs and, should a validator ever put
// one into a message, in answers.
const redactedValue = "***"

// loggingInterceptor logs every unary RPC: method, peer, duration, code,
// and the request and response with their secrets stripped. Successful RPCs
// are logged at V(1), failed ones at V(0). A panicking handler is logged
// with its stack (not its value, which might hold anything) and answered
// with Internal, so a bug in one RPC does not take the mount down.
func loggingInterceptor(log logr.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				log.Error(nil, "RPC handler panicked", "method", info.FullMethod, "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, "internal error")
			}
			kv := []any{"method", info.FullMethod}
			if p, ok := PeerFromContext(ctx); ok {
				kv = append(kv, "peerUid", p.UID, "peerPid", p.PID)
			}
			st := status.Convert(err)
			kv = append(kv, "duration", time.Since(start), "code", st.Code().String(), "request", redacted(req))
			if err != nil {
				log.Info("RPC failed", append(kv, "error", st.Message())...)
				return
			}
			log.V(1).Info("RPC", append(kv, "response", redacted(resp))...)
		}()
		return handler(ctx, req)
	}
}

// streamLoggingInterceptor logs every streaming RPC (WatchEvents) when it
// ends: method, peer, duration, code. Its messages hold no secrets, and
// are not logged.
func streamLoggingInterceptor(log logr.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				log.Error(nil, "RPC handler panicked", "method", info.FullMethod, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
			kv := []any{"method", info.FullMethod}
			if p, ok := PeerFromContext(ss.Context()); ok {
				kv = append(kv, "peerUid", p.UID, "peerPid", p.PID)
			}
			st := status.Convert(err)
			log.V(1).Info("stream ended", append(kv, "duration", time.Since(start), "code", st.Code().String())...)
		}()
		return handler(srv, ss)
	}
}

// redactedMessage formats a message for logs with its secrets stripped. It
// does the work only when a log line is actually written.
type redactedMessage struct{ v any }

func redacted(v any) redactedMessage { return redactedMessage{v} }

// MarshalLog implements logr.Marshaler.
func (r redactedMessage) MarshalLog() any { return r.String() }

// String formats the message in single-line text format after stripping it.
func (r redactedMessage) String() string {
	m, ok := r.v.(proto.Message)
	if !ok || m == nil {
		return ""
	}
	return prototext.MarshalOptions{}.Format(StripSecrets(m))
}

// StripSecrets returns a copy of m in which every set field marked
// [(rekey.credentials.v1.secret) = true] holds "***" (strings and bytes) or
// is cleared (other kinds), in nested messages, lists and maps too. Unknown
// fields are dropped as well: a newer client may send a secret field this
// server does not know. m itself is not modified.
func StripSecrets(m proto.Message) proto.Message {
	c := proto.Clone(m)
	if c != nil {
		strip(c.ProtoReflect())
	}
	return c
}

func strip(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case isSecret(fd):
			switch {
			case fd.IsList() || fd.IsMap():
				m.Clear(fd)
			case fd.Kind() == protoreflect.StringKind:
				m.Set(fd, protoreflect.ValueOfString(redactedValue))
			case fd.Kind() == protoreflect.BytesKind:
				m.Set(fd, protoreflect.ValueOfBytes([]byte(redactedValue)))
			default:
				m.Clear(fd)
			}
		case fd.IsList() && isMessage(fd):
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				strip(l.Get(i).Message())
			}
		case fd.IsMap() && isMessage(fd.MapValue()):
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				strip(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && isMessage(fd):
			strip(v.Message())
		}
		return true
	})
}

func isMessage(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
}

func isSecret(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	secret, _ := proto.GetExtension(opts, credentialsv1.E_Secret).(bool)
	return secret
}
