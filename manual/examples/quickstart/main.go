// Command quickstart is the README's quick start, complete: an HTTP service
// with readiness on a Redis, metrics, traces, and a drain on SIGTERM.
package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1) // only on a real error: a clean SIGTERM returns nil and exits 0
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// OTLP as OTEL_* say (default http/protobuf to https://localhost:4318);
	// 1 % of new traces. A bad OTEL_* value is an error here, not "no tracing".
	shutdownTracing, err := manual.SetupTracing(ctx, manual.TracingOpts{ServiceName: "shop"})
	if err != nil {
		return err
	}
	defer func() { // runs after Serve: spans of requests served in the drain are flushed
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			fmt.Fprintln(os.Stderr, "shop: flushing spans:", err)
		}
	}()

	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop"}) // Go, process, runtime
	if err != nil {
		return err
	}
	defer reg.Close()
	metrics, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		return err
	}

	health := manual.NewHealth(manual.HealthOpts{}) // checks time out after 800 ms
	defer health.Close()
	health.MustAdd(manual.Readiness, "redis", manual.RedisCheck(cmp.Or(os.Getenv("REDIS_ADDR"), "localhost:6379")), manual.CheckOpts{})

	app := http.NewServeMux()
	app.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "item", r.PathValue("id"))
	})

	root := http.NewServeMux()
	health.Routes(root) // /healthz, /readyz, /healthz/{check}, /readyz/{check}
	root.Handle("GET /metrics", manual.Handler(reg))
	root.Handle("/", manual.TraceHandler(metrics.Middleware(app), "shop"))

	ln, err := net.Listen("tcp", cmp.Or(os.Getenv("ADDR"), ":8080"))
	if err != nil {
		return err
	}
	fmt.Println("listening on", ln.Addr())
	srv := &http.Server{Handler: root, ReadHeaderTimeout: 5 * time.Second}
	return manual.Serve(ctx, srv, ln, health, manual.ServeOpts{}) // on SIGTERM: 5 s drain, then shutdown
}
