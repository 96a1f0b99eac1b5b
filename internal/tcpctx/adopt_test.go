package tcpctx

import (
	"errors"
	"os"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestAdopt: a keep-alive connection opened before obsd loaded anything
// carries nothing once its client is a sender and its server's namespace a
// receiver (the sock_ops program sets a socket's callbacks only when it is
// opened); after Adopt on both ends, its next request carries its context
// to the server's side, a second Adopt finds nothing left to do, and
// closing the connection deletes both entries (the state callback came
// with the adoption). The server's process is no sender: its accepted
// socket gets the parse callbacks only.
func TestAdopt(t *testing.T) {
	e2e.RequireRoot(t)
	np := e2e.NewNetPair(t)
	srv := startServer(t, np.B, np.BAddr.String()+":8080")
	hc := newClient(np.A)
	first := do(t, hc, np.AIno, srv, "GET", "/req/0", nil, nil)

	p := openPropagator(t)
	if err := p.AdoptErr(); err != nil {
		t.Fatalf("this kernel (6.12+) should adopt: %v", err)
	}
	if err := p.AddSender(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	if err := p.AddReceiver(srv.netns, srv.addr.Port()); err != nil {
		t.Fatal(err)
	}
	send := func(i int) exchange {
		t.Helper()
		ex := do(t, hc, np.AIno, srv, "GET", "/req/1", nil, func(c Conn) {
			if err := p.SetOutgoing(c, ctxFor(0, i)); err != nil {
				t.Error(err)
			}
		})
		if !ex.reused || ex.client != first.client || ex.server != first.server {
			t.Fatalf("request %d on connection %+v (reused %v), want the first one %+v", i, ex.client, ex.reused, first.client)
		}
		return ex
	}
	send(1)
	if got, ok, err := p.Incoming(first.server); err != nil || ok {
		t.Fatalf("before adoption the server's side holds %+v (%v, %v), want nothing", got, ok, err)
	}

	// The server's end: its namespace is a receiver, the process no sender.
	got, err := p.Adopt(srv.proc.PID())
	if err != nil || got.Connections != 1 || got.Failed != 0 {
		t.Fatalf("adopting the server's connections: %+v, %v; want 1 adopted", got, err)
	}
	// The client's end: this process, whose socket is in namespace A.
	got, err = p.adoptIn("/run/netns/"+np.A, os.Getpid())
	if err != nil || got.Connections != 1 || got.Failed != 0 {
		t.Fatalf("adopting the client's connections: %+v, %v; want 1 adopted", got, err)
	}
	send(2)
	in, ok, err := p.Incoming(first.server)
	if err != nil || !ok || in.Context != ctxFor(0, 2) {
		t.Fatalf("after adoption the server's side holds %+v (%v, %v), want %+v", in.Context, ok, err, ctxFor(0, 2))
	}
	if got, err := p.adoptIn("/run/netns/"+np.A, os.Getpid()); err != nil || got.Connections != 0 {
		t.Errorf("adopting again: %+v, %v; want nothing left to adopt", got, err)
	}
	if _, err := p.adoptIn("/run/netns/no-such-namespace", os.Getpid()); err == nil {
		t.Errorf("adopting in a namespace that does not exist: no error")
	}
	hc.CloseIdleConnections()
	waitGone(t, p, first.client, first.server)
}

// TestAdoptRefused: where the kernel cannot adopt, Adopt says so with
// ErrAdoptUnsupported (simulated: the adopter is what Open could not load).
func TestAdoptRefused(t *testing.T) {
	p := &Propagator{adoptErr: errors.Join(ErrAdoptUnsupported, errors.New("loading: invalid argument"))}
	if _, err := p.Adopt(os.Getpid()); !errors.Is(err, ErrAdoptUnsupported) {
		t.Errorf("Adopt without an adopter: %v, want ErrAdoptUnsupported", err)
	}
}
