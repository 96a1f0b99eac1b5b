// Command timed is the target of the e2e tests whose expected values come
// from the client: handlers that sleep a known time, and handlers that stay in
// flight until the test releases them. It prints its address as the first
// line of stdout.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// gate holds /block requests until /release opens it; each release starts a
// new round.
type gate struct {
	mu      sync.Mutex
	open    chan struct{}
	arrived int // /block requests of this round that reached the handler
}

func (g *gate) block(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	ch := g.open
	g.arrived++
	g.mu.Unlock()
	select {
	case <-ch:
		w.Write([]byte("released\n"))
	case <-time.After(30 * time.Second): // never hold a test forever
		http.Error(w, "never released", http.StatusGatewayTimeout)
	}
}

func (g *gate) arrivedN(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	n := g.arrived
	g.mu.Unlock()
	fmt.Fprintln(w, n)
}

func (g *gate) release(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	close(g.open)
	g.open, g.arrived = make(chan struct{}), 0
	g.mu.Unlock()
}

// sleep sleeps {ms} milliseconds (at most 2 s) before answering.
func sleep(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.PathValue("ms"))
	if err != nil || ms < 0 || ms > 2000 {
		http.Error(w, "bad ms", http.StatusBadRequest)
		return
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	w.Write([]byte("slept\n"))
}

func main() {
	g := &gate{open: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /block", g.block)
	mux.HandleFunc("GET /arrived", g.arrivedN)
	mux.HandleFunc("POST /release", g.release)
	// A literal pattern: counted in the kernel when not sampled.
	mux.HandleFunc("GET /sleep/{ms}", sleep)
	// A pattern built at run time lives on the heap, not in .rodata: such
	// requests travel as ring-buffer records.
	mux.HandleFunc(fmt.Sprintf("GET /%s/{ms}", "rsleep"), sleep)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String())
	log.Fatal(http.Serve(ln, mux))
}
