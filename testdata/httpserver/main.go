// Command httpserver is the sample service obsd's tests, demo and benchmark
// instrument. It builds with every Go release from 1.21 on: routes that need
// Go 1.22 patterns live in routes_go122.go.
//
// It prints the address it listens on as the first line of stdout.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	useTLS := flag.Bool("tls", false, "serve HTTPS with a self-signed certificate (HTTP/2 and HTTP/1.1)")
	h2c := flag.Bool("h2c", false, "serve HTTP/2 without TLS (prior knowledge) beside HTTP/1.1, through net/http's Server.Protocols (Go 1.24+)")
	reexec := flag.Bool("reexec-on-hup", false, "on SIGHUP, execute this file again in place (same pid), keeping the listening socket")
	listenFD := flag.Int("listen-fd", 0, "serve on this inherited listening socket (set by -reexec-on-hup)")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})
	// /work?us=N spends about N µs of CPU, for the benchmark's handler cost.
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		us, _ := strconv.Atoi(r.URL.Query().Get("us"))
		sum := burn(time.Duration(us) * time.Microsecond)
		fmt.Fprintf(w, "%x\n", sum[:4])
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.Copy(w, r.Body)
	})
	// net/http recovers a handler's panic and drops the connection: the
	// request never reaches finishRequest.
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	})
	// http.ErrAbortHandler: net/http drops the connection without logging.
	mux.HandleFunc("/abort", func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	})
	// Takes the connection, as WebSocket servers do: writes 101 on the raw
	// connection and echoes what follows until the client closes. The
	// request never reaches finishRequest.
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw)
	})
	// /sleep?ms=N answers after N ms: a request that stays in flight.
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		io.WriteString(w, "slept\n")
	})
	// A handler that never writes: net/http answers 200 with no body.
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {})
	registerRoutes(mux)
	registerLabelRoutes(mux)

	ln := inheritedListener(*listenFD)
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", *addr); err != nil {
			log.Fatal(err)
		}
	}
	if *reexec {
		reexecOnHUP(ln)
	}
	fmt.Println(ln.Addr().String())
	os.Stdout.Sync()
	if *useTLS {
		cert, err := selfSigned()
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
		if err := configureTLS(srv); err != nil {
			log.Fatal(err)
		}
		log.Fatal(srv.ServeTLS(ln, "", ""))
	}
	srv := &http.Server{Handler: wrap(mux)}
	if *h2c {
		if err := serveH2C(srv); err != nil {
			log.Fatal(err)
		}
	}
	log.Fatal(srv.Serve(ln))
}

// wrap is what serves plain HTTP in front of the mux: the mux itself, or
// x/net's h2c handler in a build with -tags h2c (h2c.go).
var wrap = func(h http.Handler) http.Handler { return h }

// configureTLS prepares the HTTPS server: nothing (net/http's own HTTP/2),
// or x/net's HTTP/2 server in a build with -tags h2c (h2c.go).
var configureTLS = func(*http.Server) error { return nil }

func burn(d time.Duration) [32]byte {
	var sum [32]byte
	for start := time.Now(); time.Since(start) < d; {
		sum = sha256.Sum256(sum[:])
	}
	return sum
}

// status writes the code given as the last path element.
func status(w http.ResponseWriter, code string) {
	c, err := strconv.Atoi(code)
	if err != nil || c < 200 || c > 599 {
		http.Error(w, "bad status", http.StatusBadRequest)
		return
	}
	w.WriteHeader(c)
	fmt.Fprintf(w, "status %d\n", c)
}
