package manual_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func ExampleSQLCheck() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "shop.db")
	// mode=rw: a removed database file is an error, not a new empty one.
	check := manual.SQLCheck("sqlite", "file:"+path+"?mode=rw", "SELECT id FROM items LIMIT 1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fmt.Println(check(ctx) != nil)
	// Output: true
}

func ExampleRedisCheck() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := manual.RedisCheck(ln.Addr().String())(ctx)
	fmt.Println(strings.Contains(err.Error(), "no answer"))
	// Output: true
}

func ExampleTCPCheck() {
	// SMTP greets first: send nothing, expect "220".
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Readiness, "smtp", manual.TCPCheck("tcp", "mail:25", nil, []byte("220")), manual.CheckOpts{NonCritical: true})
	fmt.Println(h.Names(manual.Readiness))
	// Output: [shutdown smtp]
}

func ExampleHTTPCheck() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer srv.Close()
	err := manual.HTTPCheck(nil, srv.URL+"/ready", 0)(context.Background())
	fmt.Println(strings.HasSuffix(err.Error(), "status 503, want 2xx"))
	// Output: true
}

func ExampleServiceName() {
	os.Setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing")
	defer os.Unsetenv("OTEL_RESOURCE_ATTRIBUTES")
	fmt.Println(manual.ServiceName("from-code"))
	// Output: billing
}

func ExampleHealth_Drained() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	go h.Drain()
	<-h.Drained() // react at once, without polling
	fmt.Println(h.Draining())
	// Output: true
}

func ExampleHTTPMetrics_Requests() {
	reg := prometheus.NewRegistry()
	m, _ := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	m.Requests().WithLabelValues("GET", "200") // a series at zero before the first request
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x", func(http.ResponseWriter, *http.Request) {})
	m.Middleware(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	fmt.Println(testutil.ToFloat64(m.Requests().WithLabelValues("GET", "200")))
	// Output: 1
}

func ExampleHTTPMetrics_Duration() {
	reg := prometheus.NewRegistry()
	m, _ := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(http.ResponseWriter, *http.Request) {})
	m.Middleware(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/items/7", nil))
	fmt.Println(testutil.CollectAndCount(m.Duration(), "http_server_request_duration_seconds"))
	// Output: 1
}

func ExampleNewHTTPClientMetrics() {
	reg := prometheus.NewRegistry()
	cm, _ := manual.NewHTTPClientMetrics(reg)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	client := &http.Client{Transport: cm.Transport(manual.TraceTransport(nil))}
	resp, _ := client.Get(srv.URL)
	resp.Body.Close()
	fmt.Println(testutil.CollectAndCount(cm.Duration()))
	// Output: 1
}
