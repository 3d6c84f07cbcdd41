//go:build !linux

package control

import (
	"fmt"
	"net"
)

func listenSocket(ListenOptions) (net.Listener, error) { return nil, ErrUnsupported }

func peerCredentials(net.Conn) (Peer, error) {
	return Peer{}, fmt.Errorf("control: peer credentials: %w", ErrUnsupported)
}
