// Package control serves a FUSE server's credential control API,
// rekey.credentials.v1.CredentialService, over a unix socket, and dials it
// for clients (the sidecar and the node plugin).
//
// The server is a thin boundary around a rotation.Manager: it parses every
// request against an allowlist, turns invalid input into InvalidArgument
// errors that name the field but never echo its value, translates outcomes
// to and from the protocol, and chooses gRPC codes — nowhere else does. A
// refused swap is a normal answer (SWAP_RESULT_REFUSED and a reason), not an
// RPC error.
//
// Access is guarded twice: Listen creates the socket with mode 0600 (owned
// by the sidecar's UID if asked) before anyone can reach it, and every
// accepted connection's peer UID is checked with SO_PEERCRED against an
// allowlist. One unary interceptor logs each RPC with its method, peer,
// duration and code, and the request only after every field marked
// [(rekey.credentials.v1.secret) = true] (and every unknown field) has been
// stripped from a copy.
//
// Typical use in a FUSE server:
//
//	lis, err := control.Listen(control.ListenOptions{
//		Path: sock, Chown: true, OwnerUID: 65532, OwnerGID: 65532,
//		AllowedUIDs: []uint32{65532, 0}, Log: log,
//	})
//	...
//	srv := control.NewServer(manager, control.Options{Log: log})
//	err = srv.Serve(ctx, lis) // returns after ctx is cancelled
//
// and in a client:
//
//	client, closer, err := control.Dial(sock)
//	defer closer.Close()
//	resp, err := client.Swap(ctx, &credentialsv1.SwapRequest{...})
package control
