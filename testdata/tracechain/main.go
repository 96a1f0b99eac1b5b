// Command tracechain is a service that calls another while serving, for
// obsd's trace-context tests: GET /call?to=URL&ctx=KIND makes one HTTP
// client call to URL under a context of KIND and answers with the callee's
// status. Builds with Go 1.21+.
//
// KIND is request (r.Context()), timeout (context.WithTimeout of it), value
// (context.WithValue of it), deep (12 context.WithValue wrappers of it, as
// a reverse proxy such as caddy's adds 9), goroutine (r.Context() passed to a goroutine
// the handler waits for), background (context.Background()), or detached
// (a goroutine that calls after the response, with
// context.WithoutCancel(r.Context())). GET /calls answers the number of
// detached calls finished, so a test knows when they are all done. With
// dump=1, /call answers 200 with what the callee sent (status line, headers
// but Date, body) instead of its status. With ctx=request&tp=VALUE, the call
// carries the header Traceparent: VALUE, as a service using an OpenTelemetry
// propagator would. With ctx=request&also=URL2, the handler then calls
// URL2 too, under the same context (answering the first non-200 status).
//
// With -h2c, it calls http URLs over HTTP/2 without TLS (Go 1.24+).
//
// It prints the address it listens on as the first line of stdout.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

type ctxKey struct{}

// traceparentKey holds a traceparent header the call sends (tp=).
type traceparentKey struct{}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	insecure := flag.Bool("insecure-http1", false, "call https URLs over HTTP/1.1, without verifying the certificate (a self-signed test server)")
	insecureH2 := flag.Bool("insecure-h2", false, "call https URLs over HTTP/2, without verifying the certificate (a self-signed test server)")
	h2c := flag.Bool("h2c", false, "call http URLs over HTTP/2 without TLS (prior knowledge; Go 1.24+)")
	flag.Parse()
	client := &http.Client{Timeout: 10 * time.Second}
	switch {
	case *insecure:
		client.Transport = &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			// A non-nil empty map turns HTTP/2 off.
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		}
	case *h2c:
		t, err := h2cTransport()
		if err != nil {
			log.Fatal(err)
		}
		client.Transport = t
	case *insecureH2:
		client.Transport = &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			// A custom TLS config turns HTTP/2 off unless forced.
			ForceAttemptHTTP2: true,
		}
	}
	var detached atomic.Int64
	// call returns the callee's status and what it sent (status line,
	// headers but Date, body).
	call := func(ctx context.Context, to string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", to, nil)
		if err != nil {
			return 0, "", err
		}
		if tp, ok := ctx.Value(traceparentKey{}).(string); ok {
			req.Header.Set("Traceparent", tp)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, "", err
		}
		resp.Header.Del("Date")
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
		resp.Header.Write(&b)
		b.Write(body)
		return resp.StatusCode, b.String(), nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		to := r.URL.Query().Get("to")
		var (
			status int
			dump   string
			err    error
		)
		switch kind := r.URL.Query().Get("ctx"); kind {
		case "request":
			ctx := r.Context()
			if tp := r.URL.Query().Get("tp"); tp != "" {
				ctx = context.WithValue(ctx, traceparentKey{}, tp)
			}
			status, dump, err = call(ctx, to)
			if also := r.URL.Query().Get("also"); also != "" && err == nil {
				var st int
				if st, _, err = call(ctx, also); err == nil && status == 200 {
					status = st
				}
			}
		case "timeout":
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			status, dump, err = call(ctx, to)
			cancel()
		case "value":
			status, dump, err = call(context.WithValue(r.Context(), ctxKey{}, "v"), to)
		case "deep":
			ctx := r.Context()
			for i := 0; i < 12; i++ {
				ctx = context.WithValue(ctx, ctxKey{}, i)
			}
			status, dump, err = call(ctx, to)
		case "goroutine":
			done := make(chan struct{})
			go func() {
				defer close(done)
				status, dump, err = call(r.Context(), to)
			}()
			<-done
		case "background":
			status, dump, err = call(context.Background(), to)
		case "detached":
			ctx := context.WithoutCancel(r.Context())
			go func() {
				time.Sleep(50 * time.Millisecond) // after the response
				if _, _, err := call(ctx, to); err != nil {
					log.Print(err)
				}
				detached.Add(1)
			}()
			status = 202
		default:
			http.Error(w, "unknown ctx "+kind, 400)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		if r.URL.Query().Get("dump") == "1" {
			// What the callee sent, but its Date: for tests that compare
			// a callee's answers with and without obsd.
			io.WriteString(w, dump)
			return
		}
		w.WriteHeader(status)
	})
	mux.HandleFunc("/calls", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, detached.Load())
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
