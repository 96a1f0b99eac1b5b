package tcpctx

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// rawSink accepts one connection on loopback and returns, once the client
// closes it, every byte that arrived: the truth of what the injector sent.
func rawSink(t *testing.T) (addr string, got <-chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		ch <- b
	}()
	return ln.Addr().String(), ch
}

func tpLine(c Context) string {
	return fmt.Sprintf("traceparent: 00-%s-%s-%02x\r\n", hex.EncodeToString(c.TraceID[:]), hex.EncodeToString(c.SpanID[:]), c.Flags&1)
}

// TestHeaders sends raw messages, each case on a new connection of this
// process (a registered sender), with a context set before the first
// write, and compares what the peer received with what was written: the
// traceparent line appears exactly before the blank line of an HTTP/1.x
// head that lacks one, in the first message after the context only, and
// nothing else changes, ever.
func TestHeaders(t *testing.T) {
	eachPushPath(t, testHeaders)
}

func testHeaders(t *testing.T, p *Propagator, self uint32) {
	head := "GET /a?b=c HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"
	post := "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nGET / HTTP/1.1\r\n\r\nxx"
	long := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 4100) + "\r\n\r\n"
	for i, tt := range []struct {
		name   string
		writes []string
		noCtx  bool
		// at: where the line goes in the concatenated writes; -1 nowhere.
		at     int
		reason func(Counters) uint64
	}{
		{name: "GET head", writes: []string{head}, at: strings.Index(head, "\r\n\r\n") + 2,
			reason: func(c Counters) uint64 { return c.HeadersInjected }},
		{name: "POST head and body in one write, body looking like a head", writes: []string{post}, at: strings.Index(post, "\r\n\r\n") + 2,
			reason: func(c Counters) uint64 { return c.HeadersInjected }},
		{name: "keep-alive: the second request has no new context", writes: []string{head, head}, at: strings.Index(head, "\r\n\r\n") + 2,
			reason: func(c Counters) uint64 { return c.HeadersInjected }},
		{name: "HTTP/1.0", writes: []string{"HEAD / HTTP/1.0\r\n\r\n"}, at: len("HEAD / HTTP/1.0\r\n"),
			reason: func(c Counters) uint64 { return c.HeadersInjected }},
		{name: "traceparent already there, any case", writes: []string{"GET / HTTP/1.1\r\nTraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nHost: x\r\n\r\n"}, at: -1,
			reason: func(c Counters) uint64 { return c.HeadersPresent }},
		{name: "no context", writes: []string{head}, noCtx: true, at: -1},
		{name: "TLS-like bytes", writes: []string{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 40)}, at: -1,
			reason: func(c Counters) uint64 { return c.HeadersNotHTTP1 }},
		{name: "bare LF lines", writes: []string{"GET / HTTP/1.1\nHost: x\n\n"}, at: -1,
			reason: func(c Counters) uint64 { return c.HeadersNotHTTP1 }},
		{name: "head split over two writes", writes: []string{"GET / HTTP/1.1\r\nHost: x\r\n", "Accept: */*\r\n\r\n"}, at: -1,
			reason: func(c Counters) uint64 { return c.HeadersTooLong }},
		{name: "head longer than 4 KiB", writes: []string{long}, at: -1,
			reason: func(c Counters) uint64 { return c.HeadersTooLong }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := rawSink(t)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conn := Conn{Netns: self, Local: addrPort(c.LocalAddr()), Remote: addrPort(c.RemoteAddr())}
			ctx := ctxFor(i, 1)
			before, err := p.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if !tt.noCtx {
				if err := p.SetOutgoing(conn, ctx); err != nil {
					t.Fatal(err)
				}
			}
			var sent []byte
			for _, w := range tt.writes {
				writeOne(t, p, c, []byte(w))
				sent = append(sent, w...)
			}
			c.Close()
			recv := <-got
			want := sent
			if tt.at >= 0 {
				want = append(append(append([]byte{}, sent[:tt.at]...), tpLine(ctx)...), sent[tt.at:]...)
			}
			if !bytes.Equal(recv, want) {
				t.Errorf("peer received\n%q\nwant\n%q", recv, want)
			}
			after, err := p.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if tt.reason != nil {
				if d := tt.reason(after) - tt.reason(before); d != 1 {
					t.Errorf("the case's counter moved by %d, want 1 (before %+v after %+v)", d, before, after)
				}
			}
			if after.HeadersFailed != 0 || after.HeadersSockFailed != 0 || after.HeadersRaced != 0 {
				t.Errorf("failures counted: %+v", after)
			}
		})
	}
}

// TestHeadersAdopt: a connection this process opened before the injector
// loaded gets no header (it never passed the established callback); after
// Adopt it does, once per context set after adoption (not for the context
// of a request sent before it), and a second Adopt finds nothing left to
// do.
func TestHeadersAdopt(t *testing.T) {
	e2e.RequireRoot(t)
	addr, got := rawSink(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, self := openHeaders(t)
	if err := p.AdoptErr(); err != nil {
		t.Fatalf("this kernel (6.12+) should adopt: %v", err)
	}
	conn := Conn{Netns: self, Local: addrPort(c.LocalAddr()), Remote: addrPort(c.RemoteAddr())}
	head := "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
	send := func(i int) {
		t.Helper()
		if err := p.SetOutgoing(conn, ctxFor(7, i)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	send(0)
	a, err := p.Adopt(os.Getpid())
	if err != nil || a.Connections != 1 || a.Failed != 0 {
		t.Fatalf("Adopt: %+v, %v; want 1 connection", a, err)
	}
	// The context set before adoption belongs to a request already sent:
	// the next write (its body, which may look like a head) is left alone.
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	send(1)
	if a, err := p.Adopt(os.Getpid()); err != nil || a.Connections != 0 {
		t.Errorf("adopting again: %+v, %v; want nothing left to adopt", a, err)
	}
	c.Close()
	at := len(head) - 2
	want := head + head + head[:at] + tpLine(ctxFor(7, 1)) + head[at:]
	if recv := <-got; string(recv) != want {
		t.Errorf("peer received\n%q\nwant\n%q", recv, want)
	}
}

// writeOne writes b as one message and, when the injector grew it, checks
// that it left in one TCP data segment (tcp_info's tcpi_data_segs_out): a
// message sent in several pieces costs the reader a wakeup for each. (One
// it left alone may leave in two: a write that crosses the socket's page
// fragment is two pieces from the start.)
func writeOne(t *testing.T, p *Propagator, c net.Conn, b []byte) {
	t.Helper()
	before, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	segs := dataSegsOut(t, c)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // separate messages
	after, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after.HeadersInjected == before.HeadersInjected {
		return
	}
	if d := dataSegsOut(t, c) - segs; d != 1 {
		t.Errorf("a %d-byte write given a traceparent left in %d TCP data segments, want 1", len(b), d)
	}
}

func dataSegsOut(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	return info.Data_segs_out
}

// openHeaders opens the injector alone with this process a sender.
func openHeaders(t *testing.T) (*Propagator, uint32) {
	t.Helper()
	return openHeadersWith(t, Options{Headers: true, NoOptions: true})
}

// eachPushPath runs test with the injector as this kernel runs it and as
// one that refuses a push at a message's end runs it (the same bytes must
// reach the peer either way).
func eachPushPath(t *testing.T, test func(t *testing.T, p *Propagator, self uint32)) {
	for _, refused := range []bool{false, true} {
		t.Run(fmt.Sprintf("push at end refused=%v", refused), func(t *testing.T) {
			p, self := openHeadersWith(t, Options{Headers: true, NoOptions: true, noPushAtEnd: refused})
			test(t, p, self)
		})
	}
}

func openHeadersWith(t *testing.T, o Options) (*Propagator, uint32) {
	t.Helper()
	e2e.RequireRoot(t)
	p, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("closing: %v", err)
		}
	})
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	self, err := NetnsOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return p, self
}

// TestHeadersStaleEntry: a context left under a connection's addresses
// (an earlier connection that never got the close callback) does not
// reach a new connection with the same addresses: its first message (a
// CONNECT to a proxy, here) goes out as written.
func TestHeadersStaleEntry(t *testing.T) {
	p, self := openHeaders(t)
	addr, got := rawSink(t)
	// A free local port, then a context under it before the dial.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := l.Addr().(*net.TCPAddr)
	l.Close()
	remote := netip.MustParseAddrPort(addr)
	if err := p.SetOutgoing(Conn{Netns: self, Local: local.AddrPort(), Remote: remote}, ctxFor(9, 1)); err != nil {
		t.Fatal(err)
	}
	c, err := (&net.Dialer{LocalAddr: local}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	connect := "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
	if _, err := c.Write([]byte(connect)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if recv := <-got; string(recv) != connect {
		t.Errorf("peer received %q, want %q as written", recv, connect)
	}
}

// TestHeadersNoRoom: with the socket's send buffer too small to queue the
// grown message at once (the kernel would then tell the program it sent
// fewer bytes than it did), the request goes out unchanged and is counted.
func TestHeadersNoRoom(t *testing.T) {
	p, self := openHeaders(t)
	addr, got := rawSink(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).SetWriteBuffer(1); err != nil { // the kernel's minimum, about 4.5 KiB
		t.Fatal(err)
	}
	head := "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 400) + "\r\n\r\n"
	conn := Conn{Netns: self, Local: addrPort(c.LocalAddr()), Remote: addrPort(c.RemoteAddr())}
	if err := p.SetOutgoing(conn, ctxFor(3, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if recv := <-got; string(recv) != head {
		t.Errorf("peer received %q, want it as written", recv)
	}
	n, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n.HeadersFailed != 1 || n.HeadersInjected != 0 {
		t.Errorf("counters %+v, want one no-room skip and no injection", n)
	}
}
