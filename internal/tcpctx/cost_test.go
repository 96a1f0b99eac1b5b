package tcpctx

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// BenchmarkPropagation measures what the program costs a keep-alive
// HTTP/1.1 exchange over loopback (client and server in this process, in a
// namespace of their own), in four setups:
//
//   - off: no program attached;
//   - attached: attached at the cgroup root, this process not registered
//     (every other connection on a host with obsd running);
//   - registered: sender and receiver registered, no context written (the
//     per-segment callbacks of an instrumented process's connections run,
//     and find nothing to send);
//   - propagating: a context on every request, written into every data
//     segment and parsed at the server.
//
// Run it with -count to interleave the setups, e.g.
//
//	go test -run '^$' -bench Propagation -count 5 ./internal/tcpctx/
func BenchmarkPropagation(b *testing.B) {
	e2e.RequireRoot(b)
	np := newNetPair(b)
	for _, mode := range []string{"off", "attached", "registered", "propagating"} {
		b.Run(mode, func(b *testing.B) {
			var p *Propagator
			if mode != "off" {
				p = openPropagator(b)
			}
			if mode == "registered" || mode == "propagating" {
				if err := p.AddSender(uint32(os.Getpid())); err != nil {
					b.Fatal(err)
				}
				if err := p.AddReceiver(np.bIno, 0); err != nil {
					b.Fatal(err)
				}
			}
			// A new connection for each setup: the callbacks are chosen at
			// connect and accept.
			lp := newLoopbackPair(b, np.b)
			var conn Conn
			before := func(c Conn) {
				if mode == "propagating" && conn != c {
					conn = c
					if err := p.SetOutgoing(c, ctxFor(1, 1)); err != nil {
						b.Fatal(err)
					}
				}
			}
			lp.get(b, np.bIno, before)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lp.get(b, np.bIno, before)
			}
			b.StopTimer()
			if p == nil {
				return
			}
			cnt, err := p.Counters()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(cnt.Written)/float64(b.N+1), "options/op")
			if want := mode == "propagating"; (cnt.Written >= uint64(b.N)) != want || (cnt.Parsed >= uint64(b.N)) != want {
				b.Fatalf("%s: counters %+v after %d requests", mode, cnt, b.N+1)
			}
		})
	}
}

// loopbackPair is an in-process HTTP server and a client keeping one
// connection to it, both in namespace ns.
type loopbackPair struct {
	hc  *http.Client
	url string
	srv *http.Server
}

func newLoopbackPair(tb testing.TB, ns string) *loopbackPair {
	tb.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) {
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
	tb.Cleanup(func() { srv.Close() })
	lp := &loopbackPair{hc: newClient(ns), url: "http://" + ln.Addr().String() + "/", srv: srv}
	tb.Cleanup(lp.hc.CloseIdleConnections)
	return lp
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
