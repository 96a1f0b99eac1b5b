// Command innermux serves net/http ServeMuxes hidden behind middleware that
// copies the request, as services do (Go 1.22+ patterns):
//
//   - the first address routes "/api/" through http.StripPrefix to an
//     inner ServeMux, and serves "GET /top" itself;
//   - the second wraps its whole ServeMux in a middleware that copies the
//     request with r.WithContext (as otelhttp does);
//   - the third serves a ServeMux through http.TimeoutHandler, which runs
//     it on a goroutine of its own.
//
// Every handler records the pattern it is registered under (the one its
// mux matched: Request.Pattern says the same from Go 1.23), so a test can
// compare obsd's http_route with it. GET /tally on the
// fourth address answers the tally as JSON. Prints "listening A B C ADMIN".
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

type seen struct {
	Method  string `json:"method"`
	Pattern string `json:"pattern"`
	Status  int    `json:"status"`
	Count   int    `json:"count"`
}

var (
	mu    sync.Mutex
	tally = map[seen]int{}
)

// handle registers on mux a handler that answers status and records
// pattern.
func handle(mux *http.ServeMux, pattern string, status int) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tally[seen{Method: r.Method, Pattern: pattern, Status: status}]++
		mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprintln(w, "ok")
	})
}

type key struct{}

func main() {
	inner := http.NewServeMux()
	handle(inner, "GET /items/{id}", 200)
	handle(inner, "POST /items", 201)
	handle(inner, "/items/{id}/parts/{part}", 200)
	outer := http.NewServeMux()
	outer.Handle("/api/", http.StripPrefix("/api", inner))
	handle(outer, "GET /top", 200)

	wrapped := http.NewServeMux()
	handle(wrapped, "GET /users/{name}", 200)
	handle(wrapped, "DELETE /users/{name}", 204)
	handle(wrapped, "/healthz", 200)
	copying := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wrapped.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, "span")))
	})

	timed := http.NewServeMux()
	handle(timed, "GET /slow/{n}", 200)
	handle(timed, "PUT /slow/{n}/done", 202)
	timeout := http.TimeoutHandler(timed, 10*time.Second, "timed out")

	admin := http.NewServeMux()
	admin.HandleFunc("GET /tally", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		out := []seen{}
		for s, n := range tally {
			s.Count = n
			out = append(out, s)
		}
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(out)
	})

	var addrs []any
	for _, h := range []http.Handler{outer, copying, timeout, admin} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		addrs = append(addrs, ln.Addr())
		go func() { log.Fatal(http.Serve(ln, h)) }()
	}
	fmt.Printf("listening %s %s %s %s\n", addrs...)
	select {}
}
