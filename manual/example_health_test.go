package manual_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

// show prints the status code and body of a probe answer.
func show(h http.Handler, path string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	fmt.Print(rec.Code, " ", rec.Header().Get("Content-Type"), " ", rec.Body.String())
}

// The whole package in a few lines: probes, metrics, tracing and drain.
func Example() {
	ctx, stop := context.WithTimeout(context.Background(), 50*time.Millisecond) // in main: signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	shutdown, _ := manual.SetupTracing(ctx, manual.TracingOpts{ServiceName: "shop", Exporter: discardExporter{}})
	defer shutdown(context.Background())
	reg, _ := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop"})
	defer reg.Close()
	m, _ := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	health := manual.NewHealth(manual.HealthOpts{})
	defer health.Close()
	health.MustAdd(manual.Liveness, "goroutines", manual.GoroutineCheck(10_000), manual.CheckOpts{})

	app := http.NewServeMux()
	app.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") })
	root := http.NewServeMux()
	health.Routes(root)
	root.Handle("GET /metrics", manual.Handler(reg))
	root.Handle("/", manual.TraceHandler(m.Middleware(app), "shop"))

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	err := manual.Serve(ctx, &http.Server{Handler: root}, ln, health, manual.ServeOpts{Drain: new(time.Duration(0))})
	fmt.Println("served, error:", err)
	// Output: served, error: <nil>
}

func ExampleNewHealth() {
	h := manual.NewHealth(manual.HealthOpts{Timeout: 500 * time.Millisecond})
	defer h.Close()
	fmt.Println(h.Names(manual.Readiness))
	// Output: [shutdown]
}

func ExampleHealth_Add() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	// An expensive check runs in the background; probes read its cache.
	err := h.Add(manual.Readiness, "search-index", func(ctx context.Context) error {
		return nil // e.g. a query that takes 300 ms
	}, manual.CheckOpts{Interval: 10 * time.Millisecond, Timeout: 2 * time.Second})
	fmt.Println(err)
	for i := 0; i < 500 && !h.Run(context.Background(), manual.Readiness).OK(); i++ {
		time.Sleep(10 * time.Millisecond) // until the first background run finished
	}
	fmt.Println(h.Run(context.Background(), manual.Readiness).Checks["search-index"])
	fmt.Println(h.Add(manual.Readiness, "bad/name", manual.GoroutineCheck(1), manual.CheckOpts{}))
	// Output:
	// <nil>
	// ok
	// adding readiness check "bad/name": name must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$
}

func ExampleHealth_AddLiveness() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	fmt.Println(h.AddLiveness("heap", manual.HeapCheck(4<<30), manual.CheckOpts{}))
	// Output: <nil>
}

func ExampleHealth_AddReadiness() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	var configLoaded atomic.Bool
	fmt.Println(h.AddReadiness("config", manual.FlagCheck(&configLoaded, "config load"), manual.CheckOpts{}))
	fmt.Println(h.Run(context.Background(), manual.Readiness).Checks["config"])
	// Output:
	// <nil>
	// config load not yet done
}

func ExampleHealth_MustAdd() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Liveness, "goroutines", manual.GoroutineCheck(10_000), manual.CheckOpts{})
	fmt.Println(h.Names(manual.Liveness))
	// Output: [goroutines]
}

func ExampleHealth_Drain() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.Drain() // on SIGTERM; Serve does this for you
	fmt.Println(h.Draining())
	show(h.ReadinessHandler(), "/readyz")
	show(h.LivenessHandler(), "/healthz")
	// Output:
	// true
	// 503 application/json {"status":"failure","checks":{"shutdown":"process is shutting down"}}
	// 200 application/json {"status":"ok","checks":{}}
}

func ExampleHealth_Draining() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	fmt.Println(h.Draining())
	// Output: false
}

func ExampleHealth_Close() {
	h := manual.NewHealth(manual.HealthOpts{})
	h.MustAdd(manual.Readiness, "bg", func(context.Context) error { return nil }, manual.CheckOpts{Interval: time.Second})
	fmt.Println(h.Close()) // stops the background loop
	// Output: <nil>
}

func ExampleHealth_Names() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Readiness, "db", func(context.Context) error { return nil }, manual.CheckOpts{})
	fmt.Println(h.Names(manual.Readiness), h.Names(manual.Liveness))
	// Output: [db shutdown] []
}

func ExampleHealth_Run() {
	h := manual.NewHealth(manual.HealthOpts{Timeout: 50 * time.Millisecond})
	defer h.Close()
	h.MustAdd(manual.Readiness, "slow", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}, manual.CheckOpts{})
	h.MustAdd(manual.Readiness, "panics", func(context.Context) error { panic("nil map") }, manual.CheckOpts{})
	rep := h.Run(context.Background(), manual.Readiness)
	fmt.Println(rep.Status)
	fmt.Println(rep.Checks["slow"])
	fmt.Println(rep.Checks["panics"])
	fmt.Println(rep.Checks["shutdown"])
	// Output:
	// failure
	// timed out after 50ms
	// check panicked: nil map
	// ok
}

func ExampleHealth_RunOne() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	rep, err := h.RunOne(context.Background(), manual.Readiness, "shutdown")
	fmt.Println(rep.Status, rep.Checks, rep.Details["shutdown"].ConsecutiveFailures, err)
	_, err = h.RunOne(context.Background(), manual.Readiness, "db")
	fmt.Println(errors.Is(err, manual.ErrUnknownCheck))
	// Output:
	// ok map[shutdown:ok] 0 <nil>
	// true
}

func ExampleHealth_Handler() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Readiness, "db", func(context.Context) error { return errors.New("dial tcp 10.0.0.5:5432: connection refused") }, manual.CheckOpts{})
	show(h.Handler(manual.Readiness), "/readyz")
	show(h.Handler(manual.Readiness), "/readyz?exclude=db")
	// ?verbose adds "details": per check its status, error, critical,
	// duration_seconds, checked_at, last_success and consecutive_failures.
	// Output:
	// 503 application/json {"status":"failure","checks":{"db":"dial tcp 10.0.0.5:5432: connection refused","shutdown":"ok"}}
	// 200 application/json {"status":"ok","checks":{"shutdown":"ok"}}
}

func ExampleHealth_LivenessHandler() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Liveness, "goroutines", manual.GoroutineCheck(1_000_000), manual.CheckOpts{})
	show(h.LivenessHandler(), "/healthz")
	// Output: 200 application/json {"status":"ok","checks":{"goroutines":"ok"}}
}

func ExampleHealth_ReadinessHandler() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	show(h.ReadinessHandler(), "/readyz")
	// Output: 200 application/json {"status":"ok","checks":{"shutdown":"ok"}}
}

func ExampleHealth_Routes() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Readiness, "cache", func(context.Context) error { return errors.New("cache cold") }, manual.CheckOpts{})
	mux := http.NewServeMux()
	h.Routes(mux)
	show(mux, "/readyz/cache")
	show(mux, "/readyz/shutdown")
	show(mux, "/readyz/nope")
	// Output:
	// 503 application/json {"status":"failure","checks":{"cache":"cache cold"}}
	// 200 application/json {"status":"ok","checks":{"shutdown":"ok"}}
	// 404 application/json {"status":"failure","checks":{"nope":"unknown check"}}
}

func ExampleKind_String() {
	fmt.Println(manual.Liveness, manual.Readiness)
	// Output: liveness readiness
}

func ExampleReport_OK() {
	fmt.Println(manual.Report{Status: manual.StatusOK}.OK(), manual.Report{Status: manual.StatusFailure}.OK())
	// Output: true false
}

func ExampleCheck() {
	// Any func(ctx) error is a check; it should honour ctx's deadline.
	var migrationsApplied manual.Check = func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		default:
			return nil
		}
	}
	fmt.Println(migrationsApplied(context.Background()))
	// Output: <nil>
}

func ExampleGoroutineCheck() {
	fmt.Println(manual.GoroutineCheck(1_000_000)(context.Background()))
	// Output: <nil>
}

func ExampleHeapCheck() {
	err := manual.HeapCheck(1)(context.Background())
	fmt.Println(strings.HasSuffix(err.Error(), "limit 1"))
	// Output: true
}

func ExampleNewHeartbeat() {
	hb := manual.NewHeartbeat(manual.HeartbeatOpts{MaxAge: time.Minute})
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Liveness, "consumer-loop", hb.Check, manual.CheckOpts{})
	fmt.Println(h.Run(context.Background(), manual.Liveness).Status)
	// Output: ok
}

func ExampleHeartbeat_Beat() {
	hb := manual.NewHeartbeat(manual.HeartbeatOpts{MaxAge: time.Minute})
	for range 3 { // the watched loop
		time.Sleep(time.Millisecond) // one unit of work
		hb.Beat()
	}
	fmt.Println(hb.Check(context.Background()))
	// Output: <nil>
}

func ExampleHeartbeat_Check() {
	hb := manual.NewHeartbeat(manual.HeartbeatOpts{MaxAge: time.Millisecond})
	time.Sleep(5 * time.Millisecond) // the loop is stuck
	fmt.Println(hb.Check(context.Background()) != nil)
	// Output: true
}

func ExamplePingCheck() {
	// db would come from sql.Open("pgx", dsn); here one that cannot connect.
	db := sql.OpenDB(tcpConnector{addr: "127.0.0.1:1"})
	defer db.Close()
	err := manual.PingCheck(db)(context.Background())
	fmt.Println(strings.HasPrefix(err.Error(), "pinging database: dial tcp 127.0.0.1:1"))
	// Output: true
}

func ExamplePinger() {
	var _ manual.Pinger = (*sql.DB)(nil)
	var _ manual.Pinger = (*sql.Conn)(nil)
	fmt.Println("*sql.DB and *sql.Conn are Pingers")
	// Output: *sql.DB and *sql.Conn are Pingers
}

func ExampleDialCheck() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0") // stands in for Redis
	check := manual.DialCheck("tcp", ln.Addr().String())
	fmt.Println(check(context.Background()))
	ln.Close()
	fmt.Println(check(context.Background()) != nil)
	// Output:
	// <nil>
	// true
}

func ExampleFlagCheck() {
	var warmed atomic.Bool
	check := manual.FlagCheck(&warmed, "cache warm-up")
	fmt.Println(check(context.Background()))
	warmed.Store(true)
	fmt.Println(check(context.Background()))
	// Output:
	// cache warm-up not yet done
	// <nil>
}

func ExampleServe() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	mux := http.NewServeMux()
	h.Routes(mux)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- manual.Serve(ctx, &http.Server{Handler: mux}, ln, h, manual.ServeOpts{Drain: new(300 * time.Millisecond)})
	}()
	sigterm()
	for !h.Draining() {
		time.Sleep(time.Millisecond)
	}
	resp, _ := http.Get("http://" + ln.Addr().String() + "/readyz") // during the drain
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, <-done)
	// Output: 503 <nil>
}
