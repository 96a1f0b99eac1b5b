// Command server is the HTTP/1.1 keep-alive server of internal/tcpctx's
// tests, run inside the receiving network namespace. Every answer is the
// same bytes for the same request (no Date header), and its body says how
// the server itself sees the connection ("local=ADDR:PORT remote=ADDR:PORT
// read=N"), so a test can name the connection from the server's side
// without asking obsd; under /plain it says only "read=N", the same bytes
// whichever connection asks. It prints "ready ADDR" once listening.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		w.Header()["Date"] = nil // same bytes for the same request
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Path == "/plain" {
			fmt.Fprintf(w, "read=%d", n)
			return
		}
		fmt.Fprintf(w, "local=%s remote=%s read=%d", local, r.RemoteAddr, n)
	})}
	fmt.Println("ready", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(srv.Serve(ln))
}
