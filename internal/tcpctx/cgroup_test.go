package tcpctx

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestChildCgroup shows why the program is attached at the root: at a
// child cgroup it runs only for sockets created by tasks inside that child
// (a socket keeps the cgroup of the task that created it, an accepted one
// its listener's). On a hybrid host nothing manages the v2 hierarchy, so
// every process sits in its root ("0::/" in /proc/PID/cgroup) and a child
// sees no socket at all until a process is moved into it.
func TestChildCgroup(t *testing.T) {
	e2e.RequireRoot(t)
	root, err := CgroupV2Root()
	if err != nil {
		t.Fatal(err)
	}
	origin := filepath.Join(root, ownCgroup(t))
	child := filepath.Join(root, fmt.Sprintf("obsd-tcpctx-test-%d", os.Getpid()))
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(child); err != nil {
			t.Errorf("removing %s: %v", child, err)
		}
	})
	np := e2e.NewNetPair(t)
	// The server starts inside the child: its listener, and so its
	// accepted connections, belong to it.
	bin := builds.Program(t, e2e.Program{Name: "tcpctxserver", Src: filepath.Join(e2e.RepoRoot(), "internal", "tcpctx", "testdata", "server")})
	ipCmd := e2e.RequireTool(t, "ip")
	sh := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec %s netns exec %s %s -listen %s:8080`, child, ipCmd, np.B, bin, np.BAddr)
	proc := e2e.StartCmd(t, exec.Command("sh", "-c", sh))
	srv := &server{proc: proc, addr: netip.MustParseAddrPort(strings.TrimPrefix(proc.First, "ready "))}
	if srv.netns, err = NetnsOf(proc.PID()); err != nil {
		t.Fatal(err)
	}

	p := openPropagatorAt(t, child)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(srv.netns, 0); err != nil {
		t.Fatal(err)
	}

	// The client (this process) is outside the child: its connection never
	// runs the program, so nothing is written and nothing arrives.
	ex := do(t, newClient(np.A), np.AIno, srv, "GET", "/outside", nil, func(c Conn) {
		if err := p.SetOutgoing(c, ctxFor(5, 0)); err != nil {
			t.Error(err)
		}
	})
	if _, ok, _ := p.Incoming(ex.server); ok {
		t.Errorf("a context arrived from a client outside the cgroup")
	}
	if cnt, _ := p.Counters(); cnt.Written != 0 {
		t.Errorf("outside the cgroup, %d options written", cnt.Written)
	}

	// Moved inside, the connections this process opens from now on run it.
	moveTo(t, child)
	t.Cleanup(func() { moveTo(t, origin) })
	want := ctxFor(5, 1)
	hc := newClient(np.A)
	defer hc.CloseIdleConnections()
	ex = do(t, hc, np.AIno, srv, "GET", "/inside", nil, func(c Conn) {
		if err := p.SetOutgoing(c, want); err != nil {
			t.Error(err)
		}
	})
	got, ok, err := p.Incoming(ex.server)
	if err != nil || !ok || got.Context != want {
		t.Fatalf("inside the cgroup the server side holds %+v (%v, %v), want %+v", got.Context, ok, err, want)
	}
	moveTo(t, origin)
}

func openPropagatorAt(t *testing.T, cgroup string) *Propagator {
	t.Helper()
	p, err := Open(Options{CgroupPath: cgroup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ownCgroup is this process's path in the v2 hierarchy ("0::PATH").
func ownCgroup(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/self/cgroup:\n%s", b)
	return ""
}

// moveTo moves this whole process into the cgroup directory dir.
func moveTo(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		t.Fatalf("moving this process to %s: %v", dir, err)
	}
}
