//go:build !linux

package discover

import "errors"

// diagConn is unavailable off Linux; listening sockets come from the tcp
// tables under ProcRoot.
type diagConn struct{}

func openDiag(string, uint64) (*diagConn, error) {
	return nil, errors.New("sock_diag is only available on Linux")
}

func (*diagConn) listeners() ([]listener, error) {
	return nil, errors.New("sock_diag is only available on Linux")
}

func (*diagConn) Close() error { return nil }
