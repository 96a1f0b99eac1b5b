package tcpctx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	bpf "github.com/obsd-dev/obsd/bpf/tcpctx"
	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tcpctx-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is testdata/server running in a namespace.
type server struct {
	proc  *e2e.Proc
	addr  netip.AddrPort
	netns uint32 // from /proc/PID/ns/net: how the server process is placed, not what obsd says
}

func startServer(t *testing.T, ns, listen string) *server {
	t.Helper()
	bin := builds.Program(t, e2e.Program{Name: "tcpctxserver", Src: filepath.Join(e2e.RepoRoot(), "internal", "tcpctx", "testdata", "server")})
	ipCmd := e2e.RequireTool(t, "ip")
	// ip netns exec joins the namespace and execs the server: same pid.
	p := e2e.StartCmd(t, exec.Command(ipCmd, "netns", "exec", ns, bin, "-listen", listen))
	a, ok := strings.CutPrefix(p.First, "ready ")
	if !ok {
		t.Fatalf("server said %q", p.First)
	}
	s := &server{proc: p, addr: netip.MustParseAddrPort(a)}
	var err error
	if s.netns, err = NetnsOf(p.PID()); err != nil {
		t.Fatal(err)
	}
	return s
}

// newClient returns an HTTP/1.1 client keeping one connection, opened in
// namespace ns.
func newClient(ns string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         e2e.DialIn(ns),
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}, Timeout: 10 * time.Second}
}

// exchange is one request as both ends saw it.
type exchange struct {
	client Conn   // the connection as the client saw it (GotConn)
	server Conn   // as the server saw it (its answer), with its namespace
	body   string // the server's answer
	reused bool
}

// do sends one request; before runs once the connection is known and
// before any byte of the request is written (where a client probe fires).
func do(t *testing.T, hc *http.Client, clientNetns uint32, srv *server, method, path string, body []byte, before func(Conn)) exchange {
	t.Helper()
	ex, err := tryDo(hc, clientNetns, srv, method, path, body, before)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// tryDo is do for goroutines other than the test's.
func tryDo(hc *http.Client, clientNetns uint32, srv *server, method, path string, body []byte, before func(Conn)) (exchange, error) {
	var ex exchange
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		ex.reused = info.Reused
		ex.client = Conn{Netns: clientNetns, Local: addrPort(info.Conn.LocalAddr()), Remote: addrPort(info.Conn.RemoteAddr())}
		if before != nil {
			before(ex.client)
		}
	}}
	url := "http://" + srv.addr.String() + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, url, rd)
	if err != nil {
		return ex, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ex, fmt.Errorf("%s %s: %w", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return ex, err
	}
	ex.body = string(b)
	if path != "/plain" {
		var local, remote string
		var n int
		if _, err := fmt.Sscanf(ex.body, "local=%s remote=%s read=%d", &local, &remote, &n); err != nil {
			return ex, fmt.Errorf("server answered %q: %w", ex.body, err)
		}
		if n != len(body) {
			return ex, fmt.Errorf("server read %d bytes, sent %d", n, len(body))
		}
		ex.server = Conn{Netns: srv.netns, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
	}
	return ex, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	return a.(*net.TCPAddr).AddrPort()
}

// ctxFor is a context distinct for each (connection, request); odd
// requests are sampled.
func ctxFor(conn, req int) Context {
	var c Context
	binary.BigEndian.PutUint32(c.TraceID[0:], 0x0b5d0000|uint32(conn))
	binary.BigEndian.PutUint32(c.TraceID[12:], uint32(req)+1)
	binary.BigEndian.PutUint32(c.SpanID[0:], uint32(conn)<<16|uint32(req))
	c.SpanID[7] = 0xaa
	c.Flags = byte(req % 2)
	return c
}

func openPropagator(t testing.TB) *Propagator {
	t.Helper()
	p, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("closing: %v", err)
		}
	})
	return p
}

// TestKeepAlive sends a keep-alive sequence over one connection across a
// veth pair: before each request the test writes a new context for the
// client's connection, and after it the server's side of that connection
// holds exactly that context, with Gen counting the requests that carried
// one. A request without a context changes nothing, a large body (many
// segments, each carrying the option) counts once, and closing the
// connection deletes both entries.
func TestKeepAlive(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	srv := startServer(t, np.B, np.BAddr.String()+":8080")
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(srv.netns, srv.addr.Port()); err != nil {
		t.Fatal(err)
	}
	capt := startCapture(t, np.B, "vb")
	hc := newClient(np.A)

	const n = 12
	const without = 5 // the request sent with no context
	const big = 8     // the request with a body of many segments
	var client, server Conn
	wantGen := uint32(0)
	var last Context
	sent := map[Context]bool{}
	for i := 0; i < n; i++ {
		want := ctxFor(0, i)
		var body []byte
		method := "GET"
		if i == big {
			method, body = "POST", bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
		}
		ex := do(t, hc, np.AIno, srv, method, fmt.Sprintf("/req/%d", i), body, func(c Conn) {
			if i == without {
				if err := p.ClearOutgoing(c); err != nil {
					t.Error(err)
				}
				return
			}
			if err := p.SetOutgoing(c, want); err != nil {
				t.Error(err)
			}
		})
		if i == 0 {
			client, server = ex.client, ex.server
		} else if !ex.reused || ex.client != client || ex.server != server {
			t.Fatalf("request %d: connection %+v/%+v (reused %v), want the first one %+v/%+v", i, ex.client, ex.server, ex.reused, client, server)
		}
		if i != without {
			wantGen++
			last = want
			sent[want] = true
		}
		got, ok, err := p.Incoming(server)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("request %d: no context for the server's side %+v", i, server)
		}
		// Stand in for the server probe, which records the gen it used: a
		// new context keeps that record, so the probe can tell fresh from
		// stale (after the request without one, gen == taken: stale).
		wantTaken := wantGen - 1
		if i == without {
			wantTaken = wantGen
		}
		if got.Context != last || got.Gen != wantGen || got.TakenGen != wantTaken {
			t.Errorf("request %d: server side holds %+v gen %d taken %d, want %+v gen %d taken %d", i, got.Context, got.Gen, got.TakenGen, last, wantGen, wantTaken)
		}
		take(t, p, server, got.Gen)
	}

	// The wire, read independently: every data segment of the client
	// carried one of the contexts written, except those of the request sent
	// without; the server's never carried any.
	capt.Stop()
	c2s := capt.Segments(client.Local, client.Remote)
	s2c := capt.Segments(client.Remote, client.Local)
	seen := map[Context]bool{}
	for _, s := range c2s {
		if len(s.payload) == 0 {
			continue
		}
		opts, err := parseOptions(s.opts)
		if err != nil {
			t.Fatal(err)
		}
		c, ok := ourOption(opts)
		if !ok {
			if !bytes.HasPrefix(s.payload, []byte(fmt.Sprintf("GET /req/%d ", without))) {
				t.Errorf("a client data segment without the option: %q", s.payload[:min(len(s.payload), 40)])
			}
			continue
		}
		if !sent[c] {
			t.Errorf("a segment carried %+v, never written", c)
		}
		seen[c] = true
	}
	if len(seen) != len(sent) {
		t.Errorf("the wire carried %d of the %d contexts written", len(seen), len(sent))
	}
	if len(stream(s2c)) == 0 {
		t.Errorf("no server data captured")
	}
	for _, s := range s2c {
		opts, _ := parseOptions(s.opts)
		if _, ok := ourOption(opts); ok {
			t.Errorf("a server segment carried the option")
		}
	}
	cnt, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.Written < n-1 || cnt.Parsed < n-1 || cnt.LostNoSpace+cnt.LostStoreFailed+cnt.LostInFull+cnt.Malformed+cnt.FlagsFailed+cnt.NetnsUnreadable != 0 {
		t.Errorf("counters %+v", cnt)
	}
	t.Logf("counters %+v", cnt)

	// Closing the connection deletes both ends' entries.
	hc.CloseIdleConnections()
	waitGone(t, p, client, server)
}

// waitGone waits up to 5 s for the entries of a closed connection to go:
// client's outgoing context and server's incoming one.
func waitGone(t *testing.T, p *Propagator, client, server Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, inOK, _ := p.Incoming(server)
		var v [32]byte
		outErr := p.objs.Out.Lookup(key(client), &v)
		if !inOK && outErr != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after close: server entry present %v, client entry lookup error %v", inOK, outErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// take writes gen as the entry's taken_gen, as a server probe does when it
// uses the context (the connection is idle, so nothing races the update).
func take(t *testing.T, p *Propagator, c Conn, gen uint32) {
	t.Helper()
	var v bpf.In
	if err := p.objs.In.Lookup(key(c), &v); err != nil {
		t.Fatal(err)
	}
	v.TakenGen = gen
	if err := p.objs.In.Update(key(c), v, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrent runs several keep-alive connections at once, each with its
// own contexts: every server-side entry holds its own connection's latest
// context after each request.
func TestConcurrent(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	srv := startServer(t, np.B, np.BAddr.String()+":8080")
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(srv.netns, 0); err != nil { // every port of the namespace
		t.Fatal(err)
	}
	const conns, reqs = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*conns*reqs) // at most two per request
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := newClient(np.A)
			defer hc.CloseIdleConnections()
			for r := 0; r < reqs; r++ {
				want := ctxFor(c, r)
				var body []byte
				if r%5 == 4 {
					body = bytes.Repeat([]byte{byte(c)}, 64<<10)
				}
				ex, err := tryDo(hc, np.AIno, srv, "POST", fmt.Sprintf("/c/%d/%d", c, r), body, func(cn Conn) {
					if err := p.SetOutgoing(cn, want); err != nil {
						errs <- err
					}
				})
				if err != nil {
					errs <- err
					return
				}
				got, ok, err := p.Incoming(ex.server)
				switch {
				case err != nil:
					errs <- err
				case !ok:
					errs <- fmt.Errorf("conn %d request %d: no context on the server side", c, r)
				case got.Context != want || got.Gen != uint32(r+1):
					errs <- fmt.Errorf("conn %d request %d: server side holds %+v gen %d, want %+v gen %d", c, r, got.Context, got.Gen, want, r+1)
				case r > 0 && !ex.reused:
					errs <- fmt.Errorf("conn %d request %d: a new connection", c, r)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cnt, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.LostNoSpace+cnt.LostStoreFailed+cnt.LostInFull+cnt.Malformed+cnt.FlagsFailed+cnt.NetnsUnreadable != 0 {
		t.Errorf("counters %+v", cnt)
	}
}

// TestAddressFamilies links requests over a dual-stack listener (the
// server's socket is AF_INET6 and sees the client IPv4-mapped, as Go's
// ":port" listeners do) and over IPv6.
func TestAddressFamilies(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ name, listen, dial string }{
		{"dual-stack listener", "[::]:8082", np.BAddr.String() + ":8082"},
		{"IPv6", "[" + np.BV6.String() + "]:8083", "[" + np.BV6.String() + "]:8083"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, np.B, tc.listen)
			if err := p.AddReceiver(srv.netns, srv.addr.Port()); err != nil {
				t.Fatal(err)
			}
			srv.addr = netip.MustParseAddrPort(tc.dial)
			hc := newClient(np.A)
			defer hc.CloseIdleConnections()
			for r := 0; r < 3; r++ {
				want := ctxFor(10+i, r)
				ex := do(t, hc, np.AIno, srv, "GET", "/fam", nil, func(c Conn) {
					if err := p.SetOutgoing(c, want); err != nil {
						t.Error(err)
					}
				})
				got, ok, err := p.Incoming(ex.server)
				if err != nil || !ok || got.Context != want || got.Gen != uint32(r+1) {
					t.Fatalf("request %d: server side %+v holds %+v gen %d (%v, %v), want %+v gen %d", r, ex.server, got.Context, got.Gen, ok, err, want, r+1)
				}
			}
		})
	}
}

// TestBytesIdentical sends the same requests in four setups and compares
// what crossed the veth, read with an AF_PACKET socket: the byte streams
// both ways are identical in all four, and the option appears only on the
// client's data segments, only when a context was written.
func TestBytesIdentical(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	srv := startServer(t, np.B, np.BAddr.String()+":8080")
	type result struct {
		c2s, s2c   []byte
		withOpt    int // client data segments carrying the option
		dataSegs   int
		serverOpts int // server segments carrying it
		inEntry    bool
	}
	run := func(t *testing.T, p *Propagator, setCtx bool) result {
		t.Helper()
		capt := startCapture(t, np.B, "vb")
		hc := newClient(np.A)
		var conn Conn
		for i, body := range [][]byte{nil, bytes.Repeat([]byte("x"), 100<<10), nil} {
			method := "GET"
			if body != nil {
				method = "POST"
			}
			do(t, hc, np.AIno, srv, method, "/plain", body, func(c Conn) {
				conn = c
				if setCtx {
					if err := p.SetOutgoing(c, ctxFor(9, i)); err != nil {
						t.Error(err)
					}
				}
			})
		}
		var r result
		if p != nil {
			server := Conn{Netns: srv.netns, Local: conn.Remote, Remote: conn.Local}
			_, r.inEntry, _ = p.Incoming(server)
		}
		hc.CloseIdleConnections()
		time.Sleep(100 * time.Millisecond) // the FIN exchange reaches the capture
		capt.Stop()
		c2s := capt.Segments(conn.Local, conn.Remote)
		s2c := capt.Segments(conn.Remote, conn.Local)
		r.c2s, r.s2c = stream(c2s), stream(s2c)
		for _, s := range c2s {
			opts, err := parseOptions(s.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, ok := ourOption(opts)
			if len(s.payload) > 0 {
				r.dataSegs++
				if ok {
					r.withOpt++
				}
			} else if ok {
				t.Errorf("a client segment without data carried the option (flags %#x)", s.flags)
			}
		}
		for _, s := range s2c {
			opts, _ := parseOptions(s.opts)
			if _, ok := ourOption(opts); ok {
				r.serverOpts++
			}
		}
		return r
	}

	base := run(t, nil, false) // no program attached
	if len(base.c2s) == 0 || len(base.s2c) == 0 {
		t.Fatalf("nothing captured: %d/%d bytes", len(base.c2s), len(base.s2c))
	}
	if base.withOpt != 0 {
		t.Fatalf("%d segments carry kind 253 with no program attached", base.withOpt)
	}
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		sender   bool // A registered
		receiver bool // B instrumented
		setCtx   bool
		wantOpt  bool
	}{
		{"no context written", true, true, false, false},
		{"context written", true, true, true, true},
		{"receiver uninstrumented", true, false, true, true},
		{"sender unregistered", false, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.sender {
				if err := p.RemoveSender(uint32(os.Getpid())); err != nil {
					t.Fatal(err)
				}
			}
			if tc.receiver {
				if err := p.AddReceiver(srv.netns, srv.addr.Port()); err != nil {
					t.Fatal(err)
				}
			} else if err := p.RemoveReceiver(srv.netns, srv.addr.Port()); err != nil {
				t.Fatal(err)
			}
			r := run(t, p, tc.setCtx)
			if !bytes.Equal(r.c2s, base.c2s) {
				t.Errorf("client→server bytes differ from the run without the program: %d vs %d bytes", len(r.c2s), len(base.c2s))
			}
			if !bytes.Equal(r.s2c, base.s2c) {
				t.Errorf("server→client bytes differ from the run without the program: %q vs %q", r.s2c, base.s2c)
			}
			if tc.wantOpt && (r.withOpt != r.dataSegs || r.dataSegs == 0) {
				t.Errorf("%d of %d client data segments carry the option, want all", r.withOpt, r.dataSegs)
			}
			if !tc.wantOpt && r.withOpt != 0 {
				t.Errorf("%d client data segments carry the option, want none", r.withOpt)
			}
			if r.serverOpts != 0 {
				t.Errorf("%d server segments carry the option", r.serverOpts)
			}
			if wantIn := tc.sender && tc.setCtx && tc.receiver; r.inEntry != wantIn {
				t.Errorf("server-side entry present %v, want %v", r.inEntry, wantIn)
			}
		})
	}
}

// TestWireLayout records what Linux puts in the options of data segments,
// over the veth and over loopback, without and with a context: NOP, NOP,
// timestamps (12 bytes), then obsd's 28-byte option, filling the 40-byte
// option space exactly.
func TestWireLayout(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	veth := startServer(t, np.B, np.BAddr.String()+":8080")
	lo := startServer(t, np.B, "127.0.0.1:8081")
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(veth.netns, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, clientNs, dev string
		srv                 *server
		clientNetns         uint32
	}{
		{"veth", np.A, "vb", veth, np.AIno},
		{"loopback", np.B, "lo", lo, np.BIno},
	} {
		t.Run(tc.name, func(t *testing.T) {
			capt := startCapture(t, np.B, tc.dev)
			hc := newClient(tc.clientNs)
			defer hc.CloseIdleConnections()
			want := ctxFor(3, 1)
			var conn Conn
			do(t, hc, tc.clientNetns, tc.srv, "GET", "/plain", nil, func(c Conn) { conn = c })
			do(t, hc, tc.clientNetns, tc.srv, "GET", "/plain", nil, func(c Conn) {
				if err := p.SetOutgoing(c, want); err != nil {
					t.Error(err)
				}
			})
			capt.Stop()
			var layouts []string
			for _, s := range capt.Segments(conn.Local, conn.Remote) {
				if len(s.payload) == 0 {
					continue
				}
				opts, err := parseOptions(s.opts)
				if err != nil {
					t.Fatal(err)
				}
				var kinds []string
				for _, o := range opts {
					if o.kind == 1 {
						kinds = append(kinds, "NOP")
						continue
					}
					kinds = append(kinds, fmt.Sprintf("%d(%d)", o.kind, len(o.data)+2))
				}
				layouts = append(layouts, fmt.Sprintf("%d bytes: %s", len(s.opts), strings.Join(kinds, " ")))
			}
			t.Logf("%s data segments' options: %q", tc.name, layouts)
			wantLayouts := []string{"12 bytes: NOP NOP 8(10)", "40 bytes: NOP NOP 8(10) 253(28)"}
			if len(layouts) != 2 || layouts[0] != wantLayouts[0] || layouts[1] != wantLayouts[1] {
				t.Errorf("layouts %q, want %q", layouts, wantLayouts)
			}
			if c, ok := ourOption(mustOpts(t, capt.Segments(conn.Local, conn.Remote))); !ok || c != want {
				t.Errorf("the option carried %+v (%v), want %+v", c, ok, want)
			}
		})
	}
}

// mustOpts returns the options of the last data segment among segs.
func mustOpts(t *testing.T, segs []segment) []tcpOption {
	t.Helper()
	for i := len(segs) - 1; i >= 0; i-- {
		if len(segs[i].payload) > 0 {
			o, err := parseOptions(segs[i].opts)
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
	}
	t.Fatal("no data segment captured")
	return nil
}

// TestSegmentsFitMTU sends a large body with a context through a device
// that does no segmentation offload (gso_max_segs 1, so every packet on
// the wire is built by TCP itself): the option's room is taken from the
// MSS, so no packet outgrows the 1500-byte MTU, and every one carries it.
func TestSegmentsFitMTU(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	ipCmd := e2e.RequireTool(t, "ip")
	if out, err := exec.Command(ipCmd, "-n", np.A, "link", "set", "va", "gso_max_segs", "1").CombinedOutput(); err != nil {
		t.Fatalf("ip link set gso_max_segs: %v: %s", err, out)
	}
	srv := startServer(t, np.B, np.BAddr.String()+":8080")
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(srv.netns, 0); err != nil {
		t.Fatal(err)
	}
	capt := startCapture(t, np.B, "vb")
	hc := newClient(np.A)
	defer hc.CloseIdleConnections()
	want := ctxFor(4, 1)
	body := bytes.Repeat([]byte("z"), 256<<10)
	ex := do(t, hc, np.AIno, srv, "POST", "/big", body, func(c Conn) {
		if err := p.SetOutgoing(c, want); err != nil {
			t.Error(err)
		}
	})
	capt.Stop()
	var data, full int
	for _, s := range capt.Segments(ex.client.Local, ex.client.Remote) {
		if s.ipLen > 1500 {
			t.Fatalf("a %d-byte packet on a 1500-byte link (payload %d, options %d)", s.ipLen, len(s.payload), len(s.opts))
		}
		if len(s.payload) == 0 {
			continue
		}
		data++
		if s.ipLen == 1500 {
			full++
		}
		opts, err := parseOptions(s.opts)
		if err != nil {
			t.Fatal(err)
		}
		if c, ok := ourOption(opts); !ok || c != want {
			t.Fatalf("a data segment carries %+v (%v), want %+v", c, ok, want)
		}
	}
	if data < len(body)/1500 || full == 0 {
		t.Fatalf("%d data segments, %d of them full-sized, for a %d-byte body: offload still on?", data, full, len(body))
	}
	if got, ok, _ := p.Incoming(ex.server); !ok || got.Context != want {
		t.Fatalf("server side holds %+v (%v), want %+v", got.Context, ok, want)
	}
}

// TestCloseDetaches checks Close removes the program from the cgroup.
func TestCloseDetaches(t *testing.T) {
	e2e.RequireRoot(t)
	p, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.objs.Prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	attached := func() bool {
		t.Helper()
		f, err := os.Open(p.Cgroup())
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupSockOps})
		if err != nil {
			t.Fatal(err)
		}
		for _, pr := range res.Programs {
			if pr.ID == id {
				return true
			}
		}
		return false
	}
	if !attached() {
		t.Fatalf("program %d not attached at %s", id, p.Cgroup())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if attached() {
		t.Fatalf("program %d still attached at %s after Close", id, p.Cgroup())
	}
}

// TestOpenErrors checks a wrong cgroup is a clear error that names it, and
// leaves nothing attached or loaded behind.
func TestOpenErrors(t *testing.T) {
	e2e.RequireRoot(t)
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		p, err := Open(Options{CgroupPath: dir})
		if err == nil {
			p.Close()
			t.Fatalf("Open at %s succeeded", dir)
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("error %q does not name %s", err, dir)
		}
	}
}

// TestForgetSender: the outgoing contexts a probe wrote for a process
// (struct tcpctx_out's tgid) go when it is forgotten, and only its own; it
// is no longer a sender. Entries are written as a probe writes them.
func TestForgetSender(t *testing.T) {
	e2e.RequireRoot(t)
	p := openPropagator(t)
	const gone, stays = 4242, 4343
	for _, tgid := range []uint32{gone, stays} {
		if err := p.AddSender(tgid); err != nil {
			t.Fatal(err)
		}
	}
	put := func(port uint16, tgid uint32) bpf.Key {
		k := key(Conn{Netns: 1, Local: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.1:%d", port)),
			Remote: netip.MustParseAddrPort("10.0.0.2:80")})
		if err := p.objs.Out.Put(k, bpf.Out{SpanId: [8]byte{byte(port)}, Tgid: tgid}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	var goneKeys, stayKeys []bpf.Key
	for port := uint16(1000); port < 1010; port++ {
		goneKeys = append(goneKeys, put(port, gone))
		stayKeys = append(stayKeys, put(port+100, stays))
	}
	n, err := p.ForgetSender(gone)
	if err != nil || n != len(goneKeys) {
		t.Fatalf("ForgetSender = %d, %v; want %d, nil", n, err, len(goneKeys))
	}
	var v bpf.Out
	for _, k := range goneKeys {
		if err := p.objs.Out.Lookup(k, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("an entry of the forgotten process is still there (%v)", err)
		}
	}
	for _, k := range stayKeys {
		if err := p.objs.Out.Lookup(k, &v); err != nil || v.Tgid != stays {
			t.Errorf("another process's entry: %+v, %v", v, err)
		}
	}
	var one uint8
	if err := p.objs.Senders.Lookup(uint32(gone), &one); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the forgotten process is still a sender (%v)", err)
	}
	if err := p.objs.Senders.Lookup(uint32(stays), &one); err != nil {
		t.Errorf("the other process is no longer a sender: %v", err)
	}
}
