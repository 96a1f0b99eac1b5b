package tcpctx

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	bpf "github.com/obsd-dev/obsd/bpf/tcpctx"
	"github.com/obsd-dev/obsd/bpf/tcpctx/helpertest"
	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestGoKeyHelper runs the uprobe-side helpers of tcpctx.h in this process
// (BPF_PROG_TEST_RUN of a raw tracepoint program, so current is this task)
// on real Go *net.TCPAddr values, the ones a netFD holds: the key they form
// is the one Conn gives for the same addresses, and the namespace they read
// is /proc/self/ns/net's.
func TestGoKeyHelper(t *testing.T) {
	e2e.RequireRoot(t)
	spec, err := helpertest.Load()
	if err != nil {
		t.Fatal(err)
	}
	var objs struct {
		Prog    *ebpf.Program `ebpf:"go_key"`
		Results *ebpf.Map     `ebpf:"results"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Prog.Close()
	defer objs.Results.Close()
	self, err := NetnsOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A real connection's addresses: Go's netFD holds these very values.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	c6, err := net.Dial("tcp", ln6.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()

	offIP := uint64(unsafe.Offsetof(net.TCPAddr{}.IP))
	offPort := uint64(unsafe.Offsetof(net.TCPAddr{}.Port))
	for _, tc := range []struct {
		name         string
		laddr, raddr *net.TCPAddr
		ok           bool
	}{
		{"dialed IPv4 (4-byte IP)", c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr), true},
		{"dialed IPv6", c6.LocalAddr().(*net.TCPAddr), c6.RemoteAddr().(*net.TCPAddr), true},
		{"IPv4 in 16 bytes", &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 8080}, true},
		{"no IP", &net.TCPAddr{Port: 1}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 8080}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "dialed IPv4 (4-byte IP)" && len(tc.laddr.IP) != 4 {
				t.Fatalf("this Go gives a dialed IPv4 connection a %d-byte IP; the case means the 4-byte form", len(tc.laddr.IP))
			}
			args := []uint64{uint64(uintptr(unsafe.Pointer(tc.laddr))), uint64(uintptr(unsafe.Pointer(tc.raddr))), offIP, offPort}
			if _, err := objs.Prog.Run(&ebpf.RunOptions{Context: args}); err != nil {
				t.Fatal(err)
			}
			runtime.KeepAlive(tc.laddr)
			runtime.KeepAlive(tc.raddr)
			var r helpertest.Result
			if err := objs.Results.Lookup(uint32(0), &r); err != nil {
				t.Fatal(err)
			}
			if r.Netns != self {
				t.Errorf("netns %d, /proc/self/ns/net says %d", r.Netns, self)
			}
			if (r.Ret == 0) != tc.ok {
				t.Fatalf("helper returned %d", r.Ret)
			}
			if !tc.ok {
				return
			}
			want := key(Conn{Netns: self, Local: tc.laddr.AddrPort(), Remote: tc.raddr.AddrPort()})
			got := bpf.Key{Netns: r.Key.Netns, Lport: r.Key.Lport, Rport: r.Key.Rport, Laddr: r.Key.Laddr, Raddr: r.Key.Raddr}
			if got != want {
				t.Fatalf("key %+v, want %+v", got, want)
			}
			if len(tc.laddr.IP) == 4 && netip.AddrFrom16(r.Key.Laddr).Unmap() != tc.laddr.AddrPort().Addr() {
				t.Fatalf("4-byte IP %v read as %v", tc.laddr.IP, netip.AddrFrom16(r.Key.Laddr))
			}
		})
	}
}
