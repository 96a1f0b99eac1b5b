package tcpctx

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// segment is one captured TCP/IPv4 packet.
type segment struct {
	src, dst netip.AddrPort
	seq      uint32
	flags    byte
	ipLen    int    // the IP packet's length
	opts     []byte // the TCP options, as on the wire
	payload  []byte
}

// capture records the TCP/IPv4 packets of one interface through an
// AF_PACKET socket: what the wire carries, read without obsd.
type capture struct {
	t    testing.TB
	fd   int
	lo   bool // loopback shows each packet twice: going out and coming in
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	segs []segment
}

// startCapture opens the capture on dev inside namespace ns; it stops at
// cleanup or at Stop.
func startCapture(t testing.TB, ns, dev string) *capture {
	t.Helper()
	c := &capture{t: t, stop: make(chan struct{}), done: make(chan struct{}), lo: dev == "lo"}
	err := e2e.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		// ETH_P_ALL: a socket for one protocol sees only incoming packets.
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding the capture to %s: %w", dev, err)
		}
		// Room for a burst of full-sized segments: a drop would make the
		// capture lie (Stop fails the test if the kernel counted one).
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			unix.Close(fd)
			return fmt.Errorf("sizing the capture buffer: %w", err)
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	go c.loop()
	t.Cleanup(c.Stop)
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 1<<17)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil { // timeout: the queue is drained; stop if asked
			select {
			case <-c.stop:
				return
			default:
				continue
			}
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Protocol != htons(unix.ETH_P_IP) || c.lo && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if s, ok := parseIPv4TCP(buf[:n]); ok {
			c.mu.Lock()
			c.segs = append(c.segs, s)
			c.mu.Unlock()
		}
	}
}

// Stop ends the capture once what the socket queued has been read (again
// is a no-op).
func (c *capture) Stop() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	unix.Close(c.fd)
	if err != nil {
		c.t.Errorf("reading the capture's statistics: %v", err)
	} else if st.Drops > 0 {
		c.t.Errorf("the capture dropped %d packets", st.Drops)
	}
}

// Segments returns what was captured between src and dst (either order
// of the two ends is a direction of its own).
func (c *capture) Segments(src, dst netip.AddrPort) []segment {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []segment
	for _, s := range c.segs {
		if s.src == src && s.dst == dst {
			out = append(out, s)
		}
	}
	return out
}

func parseIPv4TCP(b []byte) (segment, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return segment{}, false
	}
	ihl := int(b[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total > len(b) || total == 0 { // a GSO packet may say 0; take what came
		total = len(b)
	}
	if ihl < 20 || total < ihl+20 {
		return segment{}, false
	}
	src, _ := netip.AddrFromSlice(b[12:16])
	dst, _ := netip.AddrFromSlice(b[16:20])
	tcp := b[ihl:total]
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return segment{}, false
	}
	return segment{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		seq:     binary.BigEndian.Uint32(tcp[4:8]),
		ipLen:   total,
		flags:   tcp[13],
		opts:    append([]byte(nil), tcp[20:doff]...),
		payload: append([]byte(nil), tcp[doff:]...),
	}, true
}

// stream reassembles the payload of segments in sequence order, once per
// byte (a retransmission repeats bytes already placed).
func stream(segs []segment) []byte {
	segs = append([]segment(nil), segs...)
	var withData []segment
	for _, s := range segs {
		if len(s.payload) > 0 {
			withData = append(withData, s)
		}
	}
	if len(withData) == 0 {
		return nil
	}
	base := withData[0].seq
	sort.SliceStable(withData, func(i, j int) bool { return withData[i].seq-base < withData[j].seq-base })
	var out []byte
	next := withData[0].seq
	for _, s := range withData {
		off := int(int32(next - s.seq))
		if off < 0 || off >= len(s.payload) {
			if off < 0 {
				return append(out, []byte("<gap>")...)
			}
			continue
		}
		out = append(out, s.payload[off:]...)
		next = s.seq + uint32(len(s.payload))
	}
	return out
}

// tcpOption is one option of a TCP header.
type tcpOption struct {
	kind byte
	data []byte // without kind and length
}

// parseOptions splits a TCP header's options; NOPs are kept (kind 1, no
// data) so a layout can be compared exactly.
func parseOptions(b []byte) ([]tcpOption, error) {
	var out []tcpOption
	for i := 0; i < len(b); {
		switch b[i] {
		case 0: // end of list: the rest is padding
			return out, nil
		case 1:
			out = append(out, tcpOption{kind: 1})
			i++
			continue
		}
		if i+1 >= len(b) || b[i+1] < 2 || i+int(b[i+1]) > len(b) {
			return out, fmt.Errorf("bad option at %d in % x", i, b)
		}
		out = append(out, tcpOption{kind: b[i], data: b[i+2 : i+int(b[i+1])]})
		i += int(b[i+1])
	}
	return out, nil
}

// ourOption returns the context carried by an obsd option among opts.
func ourOption(opts []tcpOption) (Context, bool) {
	for _, o := range opts {
		if o.kind != 253 || len(o.data) != 26 || o.data[0] != 0x0B || o.data[1]&^1 != 0x5C {
			continue
		}
		var c Context
		copy(c.TraceID[:], o.data[2:18])
		copy(c.SpanID[:], o.data[18:26])
		c.Flags = o.data[1] & 1
		return c, true
	}
	return Context{}, false
}
