package tcpctx

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestNoOptionSpace signs a connection with TCP-MD5 (kind 19, 20 bytes with
// its padding): with the timestamps, 8 bytes of option space are left, too
// few for the context. Every data segment that had a context to carry is
// then counted as lost, nothing is written, and every request is answered
// as if nothing were attached.
func TestNoOptionSpace(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	p := openPropagator(t)
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(np.BIno, 0); err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	var ln net.Listener
	if err := e2e.InNetns(np.B, func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return signMD5(c, lo) }}
		ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, "signed")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = e2e.InNetns(np.B, func() error {
				d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error { return signMD5(rc, lo) }}
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer hc.CloseIdleConnections()
	capt := startCapture(t, np.B, "lo")
	const n = 5
	var conn Conn
	for i := 0; i < n; i++ {
		ex := do(t, hc, np.BIno, &server{addr: netip.MustParseAddrPort(ln.Addr().String())}, "GET", "/plain", nil, func(c Conn) {
			conn = c
			if err := p.SetOutgoing(c, ctxFor(6, i)); err != nil {
				t.Error(err)
			}
		})
		if ex.body != "signed" {
			t.Fatalf("request %d answered %q", i, ex.body)
		}
	}
	capt.Stop()
	data := 0
	for _, s := range capt.Segments(conn.Local, conn.Remote) {
		if len(s.payload) == 0 {
			continue
		}
		data++
		opts, err := parseOptions(s.opts)
		if err != nil {
			t.Fatal(err)
		}
		md5 := false
		for _, o := range opts {
			md5 = md5 || o.kind == 19
		}
		if _, ok := ourOption(opts); ok || !md5 {
			t.Fatalf("a data segment with MD5 %v, obsd's option %v: % x", md5, ok, s.opts)
		}
	}
	cnt, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if data < n || cnt.Written != 0 || cnt.LostNoSpace < uint64(data) {
		t.Fatalf("%d data segments; counters %+v", data, cnt)
	}
	server := Conn{Netns: np.BIno, Local: conn.Remote, Remote: conn.Local}
	if _, ok, _ := p.Incoming(server); ok {
		t.Fatal("a context arrived without being written")
	}
}

// signMD5 sets a TCP-MD5 key for peer on the socket.
func signMD5(rc syscall.RawConn, peer netip.Addr) error {
	sig := unix.TCPMD5Sig{Keylen: 8}
	copy(sig.Key[:], "obsdtest")
	sig.Addr.Family = unix.AF_INET
	a := peer.As4()
	copy(sig.Addr.Data[2:6], a[:]) // sockaddr_in: port (2 bytes), then the address
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setting TCP_MD5SIG: %w", serr)
	}
	return nil
}
