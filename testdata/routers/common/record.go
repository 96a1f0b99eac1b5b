package main

// This file is shared by every router's test service (each directory links
// it): the flags, the listeners, and the tally of what the router itself
// reported for each request.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Seen is one request as the service saw it: the route its router reported
// to its own middleware, and whether the router matched one.
type Seen struct {
	Method  string `json:"method"`
	Route   string `json:"route"`
	Matched bool   `json:"matched"`
	Status  int    `json:"status"`
	Count   int    `json:"count"`
}

// report is where a router's middleware leaves the route it was told.
type report struct {
	route   string
	matched bool
}

type reportKey struct{}

// reportRoute records, from inside the router, the route the router
// reported for the request.
func reportRoute(ctx context.Context, route string, matched bool) {
	if r, ok := ctx.Value(reportKey{}).(*report); ok {
		r.route, r.matched = route, matched
	}
}

type tally struct {
	mu sync.Mutex
	m  map[Seen]int
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// wrap puts a report in each request's context (copying the request, as
// middleware does) before the router, and tallies it afterwards.
func (t *tally) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := &report{}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), reportKey{}, rep)))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		t.mu.Lock()
		t.m[Seen{Method: r.Method, Route: rep.route, Matched: rep.matched, Status: sw.status}]++
		t.mu.Unlock()
	})
}

func (t *tally) serve(w http.ResponseWriter, _ *http.Request) {
	t.mu.Lock()
	out := []Seen{}
	for s, n := range t.m {
		s.Count = n
		out = append(out, s)
	}
	t.mu.Unlock()
	_ = json.NewEncoder(w).Encode(out)
}

func ok(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }

// run serves router on -listen (over TLS with HTTP/2 offered, with -tls)
// and the tally on -admin (GET /tally), and prints "listening ADDR ADMIN".
func run(router http.Handler) {
	listen := flag.String("listen", "127.0.0.1:0", "address of the routed service")
	admin := flag.String("admin", "127.0.0.1:0", "address of GET /tally")
	useTLS := flag.Bool("tls", false, "serve the routed service over TLS, where clients negotiate HTTP/2")
	flag.Parse()
	t := &tally{m: map[Seen]int{}}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	aln, err := net.Listen("tcp", *admin)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/tally", t.serve)
	go func() { log.Fatal(http.Serve(aln, mux)) }()
	fmt.Fprintf(os.Stdout, "listening %s %s\n", ln.Addr(), aln.Addr())
	srv := &http.Server{Handler: t.wrap(router)}
	if *useTLS {
		cert, err := selfSigned()
		if err != nil {
			log.Fatal(err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		log.Fatal(srv.ServeTLS(ln, "", ""))
	}
	log.Fatal(srv.Serve(ln))
}

// selfSigned makes a throwaway certificate for 127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
