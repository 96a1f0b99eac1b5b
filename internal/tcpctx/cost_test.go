package tcpctx

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// BenchmarkPropagation measures what the program costs a keep-alive
// HTTP/1.1 exchange over loopback (client and server in this process, in a
// namespace of their own), in four setups:
//
//   - off: no program attached;
//   - attached: attached at the cgroup root, this process not registered
//     (every other connection on a host where obsd propagates);
//   - registered: sender and receiver registered, no context written (the
//     per-segment callbacks of an instrumented process's connections run,
//     and find nothing to send);
//   - propagating: a context on every request, written into every data
//     segment and parsed at the server.
//
// Each round runs b.N requests in each setup in turn, so the setups share
// the host's drift; the metrics are each setup's median ns per request and
// the median of its per-round ratio to off, and, from the kernel's BPF
// run-time statistics (less disturbed by other load), the program's runs
// and ns per request. Bounded by -benchtime, e.g.
//
//	go test -run '^$' -bench Propagation -benchtime 3000x ./internal/tcpctx/
func BenchmarkPropagation(b *testing.B) {
	e2e.RequireRoot(b)
	np := e2e.NewNetPair(b)
	benchSetups(b, []string{"off", "attached", "registered", "propagating"}, "off", 5,
		func(mode string, _ int) (float64, bpfCost) { return propagationRound(b, np, mode, b.N) })
}

// benchSetups runs round for every setup in turn, rounds times, so that
// the setups share the host's drift, and reports each one's median ns per
// request, its median per-round ratio to the setup base, and its
// program's runs and ns per request; the first setup runs no program.
// round gets the setup and a number unique to the run.
func benchSetups(b *testing.B, modes []string, base string, rounds int, round func(mode string, run int) (float64, bpfCost)) {
	b.Helper()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	perReq := map[string][]float64{}
	ratio := map[string][]float64{}
	runs := map[string][]float64{}
	bpfNs := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		ns := map[string]float64{}
		for i, mode := range modes {
			n, st := round(mode, r*len(modes)+i)
			ns[mode] = n
			perReq[mode] = append(perReq[mode], n)
			runs[mode] = append(runs[mode], st.runs)
			bpfNs[mode] = append(bpfNs[mode], st.ns)
		}
		for _, mode := range modes[1:] {
			if mode != base {
				ratio[mode] = append(ratio[mode], ns[mode]/ns[base])
			}
		}
	}
	for i, mode := range modes {
		b.ReportMetric(median(perReq[mode]), mode+"-ns/req")
		if i == 0 {
			continue
		}
		if r, ok := ratio[mode]; ok {
			b.ReportMetric(median(r), mode+"/"+base)
		}
		b.ReportMetric(median(runs[mode]), mode+"-bpfruns/req")
		b.ReportMetric(median(bpfNs[mode]), mode+"-bpfns/req")
	}
	b.ReportMetric(0, "ns/op") // the per-setup metrics above are the result
}

// bpfCost is what the program's runs cost, per request.
type bpfCost struct{ runs, ns float64 }

// costSince is prog's runs and run time per request over the n requests
// since its statistics read st0.
func costSince(b *testing.B, prog *ebpf.Program, st0 *ebpf.ProgramStats, n int) bpfCost {
	b.Helper()
	st, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	return bpfCost{runs: float64(st.RunCount-st0.RunCount) / float64(n), ns: float64((st.Runtime - st0.Runtime).Nanoseconds()) / float64(n)}
}

// propagationRound sets mode up, sends n requests on a new connection after
// one to open it, tears it down and returns the ns per request and the
// program's runs and run time per request.
func propagationRound(b *testing.B, np *e2e.NetPair, mode string, n int) (float64, bpfCost) {
	b.Helper()
	var p *Propagator
	if mode != "off" {
		var err error
		if p, err = Open(Options{}); err != nil {
			b.Fatal(err)
		}
		defer p.Close()
	}
	if mode == "registered" || mode == "propagating" {
		if err := p.AddSender(uint32(os.Getpid())); err != nil {
			b.Fatal(err)
		}
		if err := p.AddReceiver(np.BIno, 0); err != nil {
			b.Fatal(err)
		}
	}
	// A new connection for each setup: the callbacks are chosen at connect
	// and accept.
	lp := newLoopbackPair(b, np.B)
	defer lp.close()
	var conn Conn
	before := func(c Conn) {
		if mode == "propagating" && conn != c {
			conn = c
			if err := p.SetOutgoing(c, ctxFor(1, 1)); err != nil {
				b.Fatal(err)
			}
		}
	}
	lp.get(b, np.BIno, before)
	var st0 *ebpf.ProgramStats
	if p != nil {
		var err error
		if st0, err = p.objs.Prog.Stats(); err != nil {
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
		cost = costSince(b, p.objs.Prog, st0, n)
		cnt, err := p.Counters()
		if err != nil {
			b.Fatal(err)
		}
		if want := mode == "propagating"; (cnt.Written >= uint64(n)) != want || (cnt.Parsed >= uint64(n)) != want {
			b.Fatalf("%s: counters %+v after %d requests", mode, cnt, n+1)
		}
	}
	return ns, cost
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// loopbackPair is an in-process HTTP server and a client keeping one
// connection to it, both in one namespace; close releases both.
type loopbackPair struct {
	hc  *http.Client
	url string
	srv *http.Server
}

func (lp *loopbackPair) close() {
	lp.hc.CloseIdleConnections()
	lp.srv.Close()
}

func newLoopbackPair(tb testing.TB, ns string) *loopbackPair {
	tb.Helper()
	var ln net.Listener
	if err := e2e.InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	body := []byte("hello")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	})}
	go srv.Serve(ln)
	return &loopbackPair{hc: newClient(ns), url: "http://" + ln.Addr().String() + "/", srv: srv}
}

// get sends one GET; before runs with the connection before the request is
// written.
func (lp *loopbackPair) get(tb testing.TB, netns uint32, before func(Conn)) {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if before != nil {
			before(Conn{Netns: netns, Local: addrPort(info.Conn.LocalAddr()), Remote: addrPort(info.Conn.RemoteAddr())})
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", lp.url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := lp.hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("status %d", resp.StatusCode)
	}
}
