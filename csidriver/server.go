package csidriver

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"rekey.dev/rekey/internal/contract"
)

// strippedValue replaces every csi_secret field (and every map entry of
// one) in logged requests.
const strippedValue = "***stripped***"

// StripSecrets returns a copy of m in which every field the CSI spec marks
// csi_secret (NodePublishVolumeRequest.secrets and the like) holds
// strippedValue instead of its value. It does what csi-lib-utils'
// protosanitizer does, written here because that module requires a newer
// client-go than this project pins.
func StripSecrets(m proto.Message) proto.Message {
	if m == nil {
		return nil
	}
	c := proto.Clone(m)
	strip(c.ProtoReflect())
	stripTokens(c)
	return c
}

// stripTokens replaces the service-account tokens kubelet passes in the
// volume context (CSIDriver tokenRequests): the CSI spec does not mark
// volume_context csi_secret, but this entry is one.
func stripTokens(m proto.Message) {
	var vc map[string]string
	switch r := m.(type) {
	case *csi.NodePublishVolumeRequest:
		vc = r.GetVolumeContext()
	case *csi.ValidateVolumeCapabilitiesRequest:
		vc = r.GetVolumeContext()
	}
	if _, ok := vc[contract.PodInfoServiceAccountTokens]; ok {
		vc[contract.PodInfoServiceAccountTokens] = strippedValue
	}
}

func strip(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if isSecret(fd) {
			switch {
			case fd.IsMap():
				mp := m.Mutable(fd).Map()
				var ks []protoreflect.MapKey
				mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool { ks = append(ks, k); return true })
				for _, k := range ks {
					if fd.MapValue().Kind() == protoreflect.StringKind {
						mp.Set(k, protoreflect.ValueOfString(strippedValue))
					} else {
						mp.Clear(k)
					}
				}
			case fd.Kind() == protoreflect.StringKind && !fd.IsList():
				m.Set(fd, protoreflect.ValueOfString(strippedValue))
			default:
				m.Clear(fd)
			}
			return true
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { strip(mv.Message()); return true })
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				for i := 0; i < v.List().Len(); i++ {
					strip(v.List().Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			strip(v.Message())
		}
		return true
	})
}

func isSecret(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	v, ok := proto.GetExtension(opts, csi.E_CsiSecret).(bool)
	return ok && v
}

// LoggingInterceptor logs every CSI call — method, request with secrets
// stripped, duration, gRPC code — at verbosity 2 (errors always).
func LoggingInterceptor(log logr.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		logged := req
		if m, ok := req.(proto.Message); ok {
			logged = StripSecrets(m)
		}
		resp, err := handler(logr.NewContext(ctx, log.WithValues("method", info.FullMethod)), req)
		kv := []any{"method", info.FullMethod, "request", logged, "duration", time.Since(start).String()}
		if err != nil {
			log.Error(err, "CSI call failed", append(kv, "code", status.Code(err).String())...)
		} else {
			log.V(2).Info("CSI call", kv...)
		}
		return resp, err
	}
}

// ControllerGRPCServer returns a gRPC server with rekey-controller's
// Identity service (CONTROLLER_SERVICE) and ctrl (NewControllerServer),
// behind the secret-stripping logging interceptor.
func ControllerGRPCServer(ctrl csi.ControllerServer, version string, log logr.Logger) *grpc.Server {
	srv := grpc.NewServer(grpc.UnaryInterceptor(LoggingInterceptor(log)))
	csi.RegisterIdentityServer(srv, &identityServer{version: version, controller: true})
	csi.RegisterControllerServer(srv, ctrl)
	return srv
}
