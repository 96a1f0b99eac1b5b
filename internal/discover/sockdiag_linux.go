package discover

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/nsenter"
)

// diagConn is a NETLINK_SOCK_DIAG socket. A netlink socket answers for the
// network namespace it was created in, for as long as it lives, so one is
// kept per namespace (which it also keeps alive until closed).
type diagConn struct {
	fd  int
	seq uint32
	// The kernel sends dump datagrams of at most 32 KiB; a larger buffer
	// can never be truncated.
	buf []byte
}

// openDiag opens a sock_diag socket in the network namespace of nsPath (a
// /proc/PID/ns/net file), or in obsd's own when nsPath is "". Entering
// another namespace needs CAP_SYS_ADMIN. If wantIno is not 0 and the
// namespace's inode differs, the process moved: errMoved.
func openDiag(nsPath string, wantIno uint64) (*diagConn, error) {
	if nsPath == "" {
		return newDiagConn()
	}
	var c *diagConn
	err := nsenter.Do(nsPath, wantIno, func() (err error) {
		c, err = newDiagConn()
		return err
	})
	return c, err
}

func newDiagConn() (*diagConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening sock_diag socket: %w", err)
	}
	// The kernel answers at once; a timeout only guards a scan against a
	// reply that never comes.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting sock_diag receive timeout: %w", err)
	}
	return &diagConn{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// listeners dumps the TCP sockets in LISTEN state, IPv4 and IPv6.
func (c *diagConn) listeners() ([]listener, error) {
	var all []listener
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		c.seq++
		req := buildDiagReq(family, c.seq)
		if err := unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("sending sock_diag request: %w", err)
		}
		for done := false; !done; {
			n, _, err := unix.Recvfrom(c.fd, c.buf, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("receiving sock_diag reply: %w", err)
			}
			var ls []listener
			ls, done, err = parseDiagReply(c.buf[:n], c.seq)
			if err != nil {
				return nil, err
			}
			all = append(all, ls...)
		}
	}
	return all, nil
}

func (c *diagConn) Close() error {
	return unix.Close(c.fd)
}
