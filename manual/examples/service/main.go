// Command service is a small HTTP service that uses all of package manual:
// health checks with drain, metrics with exemplars, runtime statistics and
// tracing. It is also the fixture of the package's end-to-end tests.
//
// Usage:
//
//	service [-addr 127.0.0.1:8080] [-dep host:port] [-drain 5s]
//
// The first line on stdout is the bound address. Routes: /hello (200),
// /fail (500), /slow?ms=N (sleeps N ms, at most 10000), /healthz, /readyz,
// /metrics. Tracing follows OTEL_* (OTEL_TRACES_SAMPLER=always_on samples
// every request, so every request leaves an exemplar).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

func main() {
	if err := run(); err != nil {
		slog.Error("service failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (port 0 picks a free port)")
	dep := flag.String("dep", "", "host:port of a TCP dependency that readiness dials")
	drain := flag.Duration("drain", 5*time.Second, "how long to keep serving with readiness failing after SIGTERM")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *drain < 0 {
		return fmt.Errorf("-drain %s is negative", *drain)
	}
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	shutdownTracing, err := manual.SetupTracing(ctx, manual.TracingOpts{ServiceName: "example"})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			slog.Error("flushing spans", "error", err)
		}
	}()

	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "example"})
	if err != nil {
		return err
	}
	defer reg.Close()
	metrics, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		return err
	}

	health := manual.NewHealth(manual.HealthOpts{})
	defer health.Close()
	health.MustAdd(manual.Liveness, "goroutines", manual.GoroutineCheck(10_000), manual.CheckOpts{})
	health.MustAdd(manual.Liveness, "heap", reg.Runtime().HeapCheck(1<<30), manual.CheckOpts{})
	if *dep != "" {
		health.MustAdd(manual.Readiness, "dep", manual.DialCheck("tcp", *dep), manual.CheckOpts{})
	}

	app := http.NewServeMux()
	app.HandleFunc("GET /hello", hello)
	app.HandleFunc("GET /fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "failing on purpose", http.StatusInternalServerError)
	})
	app.HandleFunc("GET /slow", slow)

	// Probes and scrapes stay out of the request metrics and traces.
	root := http.NewServeMux()
	health.Routes(root)
	root.Handle("GET /metrics", manual.Handler(reg))
	root.Handle("/", manual.TraceHandler(metrics.Middleware(app), "example"))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	fmt.Println(ln.Addr().String())

	srv := &http.Server{Handler: root, ReadHeaderTimeout: 5 * time.Second}
	return manual.Serve(ctx, srv, ln, health, manual.ServeOpts{Drain: drain}) // -drain 0s: no drain
}

func hello(w http.ResponseWriter, r *http.Request) {
	if id := manual.TraceID(r.Context()); id != "" {
		w.Header().Set("X-Trace-Id", id)
	}
	fmt.Fprintln(w, "hello")
}

func slow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 || ms > 10_000 {
		http.Error(w, "ms must be an integer in [0, 10000]", http.StatusBadRequest)
		return
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		fmt.Fprintf(w, "slept %d ms\n", ms)
	case <-r.Context().Done():
		err := r.Context().Err()
		if errors.Is(err, context.Canceled) {
			return // the client left; nobody reads an answer
		}
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
}
