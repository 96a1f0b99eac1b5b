package grpcclient

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/test/e2e"
	"github.com/obsd-dev/obsd/internal/uprobes"
)

// sink collects the calls the probe reported.
type sink struct {
	mu    sync.Mutex
	calls []client.Call
}

func (s *sink) Event(ev probe.Event) {
	if c, ok := ev.(client.Call); ok {
		s.mu.Lock()
		s.calls = append(s.calls, c)
		s.mu.Unlock()
	}
}

// tally is the client's own count: {fullMethod: {CodeName: n}}, as
// grpcapp prints it (codes.Code.String names).
type tally map[string]map[string]int

// holdClient starts grpcapp -call addr -hold: it waits for a line on stdin
// before its first call, so it can be instrumented first.
type holdClient struct {
	proc  *e2e.Proc
	stdin io.WriteCloser
}

func startClient(t *testing.T, bin, addr string, rounds int, env ...string) *holdClient {
	t.Helper()
	cmd := exec.Command(bin, "-call", addr, "-hold", "-rounds", strconv.Itoa(rounds))
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := e2e.StartCmd(t, cmd)
	if p.First != "ready" {
		t.Fatalf("client printed %q, want ready", p.First)
	}
	t.Cleanup(func() { stdin.Close() })
	return &holdClient{proc: p, stdin: stdin}
}

// run lets the client call and returns its tally.
func (c *holdClient) run(t *testing.T) tally {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out := c.proc.Out.String()
		if i := strings.IndexByte(out, '{'); i >= 0 && strings.Contains(out[i:], "\n") {
			var tl tally
			if err := json.Unmarshal([]byte(out[i:strings.IndexByte(out[i:], '\n')+i]), &tl); err != nil {
				t.Fatalf("client tally: %v\n%s", err, out)
			}
			return tl
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("client printed no tally:\n%s", c.proc.Out)
	return nil
}

// codeNames are codes.Code.String, the names the client's tally uses.
var codeNames = []string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
	"Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func tallyOf(calls []client.Call) tally {
	tl := tally{}
	for _, c := range calls {
		if tl[c.Method] == nil {
			tl[c.Method] = map[string]int{}
		}
		name := "Code(" + strconv.Itoa(int(c.Code)) + ")"
		if int(c.Code) < len(codeNames) {
			name = codeNames[c.Code]
		}
		tl[c.Method][name]++
	}
	return tl
}

func sameTally(a, b tally) bool {
	for m, codes := range a {
		for c, n := range codes {
			if b[m][c] != n {
				return false
			}
		}
	}
	for m, codes := range b {
		for c, n := range codes {
			if a[m][c] != n {
				return false
			}
		}
	}
	return true
}

// TestProbeCountsEveryCall attaches the probe alone (through the manager,
// as obsd does) to grpcapp's client and compares the calls it reports per
// (method, code) with the client's own tally, against a live server and
// against a refused address.
func TestProbeCountsEveryCall(t *testing.T) {
	e2e.RequireRoot(t)
	bin := grpcApp(t, versions[0]) // built once for both tests
	srv := e2e.Start(t, bin, nil, "-listen", "127.0.0.1:0")
	addr := strings.TrimPrefix(srv.First, "listening ")
	for _, target := range []string{addr, "127.0.0.1:1"} {
		t.Run(target, func(t *testing.T) {
			cl := startClient(t, bin, target, 3)
			s := attachProbe(t, cl.proc.PID())
			want := cl.run(t)
			if got := s.wait(want); !sameTally(got, want) {
				t.Fatalf("probe counted\n%v\nclient counted\n%v", got, want)
			}
			t.Logf("%v", want)
		})
	}
}

// attachProbe attaches the client probe alone to pid, through the manager
// as obsd does, and returns what collects its calls.
func attachProbe(t *testing.T, pid int) *sink {
	t.Helper()
	s := &sink{}
	m, err := uprobes.New(uprobes.Options{Sink: s, Probes: []*probe.Probe{client.New()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := m.Attach(pid, "/proc/"+strconv.Itoa(pid)+"/exe"); err != nil {
		t.Fatal(err)
	}
	return s
}

// wait returns the tally of the calls reported so far once it equals want,
// or after 5 s.
func (s *sink) wait(want tally) tally {
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := tallyOf(s.calls)
		s.mu.Unlock()
		if sameTally(got, want) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusAfterSendEOF: a client-streaming call the server ends before
// the client has sent everything. grpc-go finishes the attempt first with
// io.EOF (from SendMsg) and later with the call's status (from RecvMsg); the
// probe must count the call once, with the status the client got, not as
// OK at the io.EOF.
func TestStatusAfterSendEOF(t *testing.T) {
	e2e.RequireRoot(t)
	srvBin := grpcApp(t, versions[0])
	bin := eofClient(t)
	srv := e2e.Start(t, srvBin, nil, "-listen", "127.0.0.1:0")
	cmd := exec.Command(bin, "-call", strings.TrimPrefix(srv.First, "listening "), "-rounds", "5")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := e2e.StartCmd(t, cmd)
	t.Cleanup(func() { stdin.Close() })
	cl := &holdClient{proc: p, stdin: stdin}
	s := attachProbe(t, p.PID())
	want := cl.run(t)
	if want["/no.such.Service/Upload"]["Unimplemented"] != 5 {
		t.Fatalf("client tally %v, want 5 Unimplemented", want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Out.String(), "send_eof") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.Out.String(), "send_eof 5") {
		t.Fatalf("not every call saw io.EOF from SendMsg, so the path is not tested:\n%s", p.Out)
	}
	if got := s.wait(want); !sameTally(got, want) {
		t.Fatalf("probe counted\n%v\nclient counted\n%v", got, want)
	}
}
