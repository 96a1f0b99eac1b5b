package tcpctx

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// BenchmarkHeaders measures what the header injector costs a keep-alive
// HTTP/1.1 GET over loopback (client and server in this process), in four
// setups:
//
//   - off: no program attached;
//   - idle: the injector attached and this process a sender, no context
//     (the sk_msg program runs on every write and finds nothing to do: the
//     injector's floor);
//   - append: a new context before every request, the line appended to the
//     head (a push at the message's end, this kernel's path);
//   - insert: the same, the line pushed into the head before its blank
//     line, as on a kernel that refuses a push at the end.
//
// Rounds run every setup in turn, so they share the host's drift; the
// metrics are each setup's median ns per request, its median per-round
// ratio to idle, and the sk_msg program's runs and ns per request from the
// kernel's run-time statistics. Bounded by -benchtime, e.g.
//
//	go test -run '^$' -bench Headers -benchtime 5000x ./internal/tcpctx/
func BenchmarkHeaders(b *testing.B) {
	e2e.RequireRoot(b)
	np := e2e.NewNetPair(b)
	benchSetups(b, []string{"off", "idle", "append", "insert"}, "idle", 7,
		func(mode string, run int) (float64, bpfCost) { return headersRound(b, np, mode, run, b.N) })
}

// headersRound sets mode up, sends n requests on a new connection after
// one to open it, each with a context of its own (conn, request) where the
// mode injects, and returns the ns per request and the sk_msg program's
// cost per request.
func headersRound(b *testing.B, np *e2e.NetPair, mode string, conn, n int) (float64, bpfCost) {
	b.Helper()
	var p *Propagator
	if mode != "off" {
		var err error
		if p, err = Open(Options{Headers: true, NoOptions: true, noPushAtEnd: mode == "insert"}); err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		if err := p.AddSender(uint32(os.Getpid())); err != nil {
			b.Fatal(err)
		}
	}
	lp := newLoopbackPair(b, np.B)
	defer lp.close()
	req := 0
	before := func(c Conn) {
		if mode == "append" || mode == "insert" {
			req++
			if err := p.SetOutgoing(c, ctxFor(conn, req)); err != nil {
				b.Fatal(err)
			}
		}
	}
	lp.get(b, np.BIno, before)
	var st0 *ebpf.ProgramStats
	if p != nil {
		var err error
		if st0, err = p.hdr.Headers.Stats(); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		lp.get(b, np.BIno, before)
	}
	ns := float64(time.Since(start).Nanoseconds()) / float64(n)
	var cost bpfCost
	if p != nil {
		cost = costSince(b, p.hdr.Headers, st0, n)
		cnt, err := p.Counters()
		if err != nil {
			b.Fatal(err)
		}
		if inject := mode == "append" || mode == "insert"; (cnt.HeadersInjected == uint64(n+1)) != inject {
			b.Fatalf("%s: counters %+v after %d requests", mode, cnt, n+1)
		}
	}
	return ns, cost
}
