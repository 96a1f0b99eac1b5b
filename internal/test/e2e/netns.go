package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// NetPair is two network namespaces joined by a veth pair: A (10.231.0.1,
// fd00:231::1 on "va": the clients) and B (10.231.0.2, fd00:231::2 on
// "vb": the servers). Traffic between them crosses a real link, not
// loopback.
type NetPair struct {
	A, B         string // names under /run/netns
	AIno, BIno   uint32 // their inodes (a connection's network namespace)
	AAddr, BAddr netip.Addr
	AV6, BV6     netip.Addr
}

var netPairs atomic.Int32 // names each test's pair apart

// NewNetPair creates the namespaces and deletes them (and the veth with
// them) at cleanup. Needs root and ip(8).
func NewNetPair(t testing.TB) *NetPair {
	t.Helper()
	ipCmd := RequireTool(t, "ip")
	n := netPairs.Add(1)
	p := &NetPair{
		A:     fmt.Sprintf("obsdtc%d-%da", os.Getpid(), n),
		B:     fmt.Sprintf("obsdtc%d-%db", os.Getpid(), n),
		AAddr: netip.MustParseAddr("10.231.0.1"),
		BAddr: netip.MustParseAddr("10.231.0.2"),
		AV6:   netip.MustParseAddr("fd00:231::1"),
		BV6:   netip.MustParseAddr("fd00:231::2"),
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipCmd, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", p.A)
	t.Cleanup(func() { exec.Command(ipCmd, "netns", "del", p.A).Run() })
	run("netns", "add", p.B)
	t.Cleanup(func() { exec.Command(ipCmd, "netns", "del", p.B).Run() })
	run("link", "add", "va", "netns", p.A, "type", "veth", "peer", "name", "vb", "netns", p.B)
	run("-n", p.A, "addr", "add", p.AAddr.String()+"/24", "dev", "va")
	run("-n", p.B, "addr", "add", p.BAddr.String()+"/24", "dev", "vb")
	run("-n", p.A, "addr", "add", p.AV6.String()+"/64", "dev", "va", "nodad")
	run("-n", p.B, "addr", "add", p.BV6.String()+"/64", "dev", "vb", "nodad")
	for _, ns := range []struct{ name, dev string }{{p.A, "va"}, {p.B, "vb"}} {
		run("-n", ns.name, "link", "set", "lo", "up")
		run("-n", ns.name, "link", "set", ns.dev, "up")
	}
	p.AIno = nsInode(t, p.A)
	p.BIno = nsInode(t, p.B)
	return p
}

func nsInode(t testing.TB, name string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		t.Fatalf("stat netns %s: %v", name, err)
	}
	return uint32(st.Ino)
}

// InNetns runs fn on an OS thread that has joined the namespace, then
// returns the thread to its own namespace (or, failing that, lets it die
// with its goroutine: a thread left in another namespace, the main thread
// above all, would make /proc/self/ns/net lie). Sockets belong to the
// namespace they are created in, so what fn creates stays there.
func InNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening this thread's netns: %w", err)
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("joining netns %s: %w", name, err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DialIn returns a DialContext that opens its connections in namespace name.
func DialIn(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(name, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
