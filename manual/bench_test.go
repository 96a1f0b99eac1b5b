package manual_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/obsd-dev/obsd/manual"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// nopWriter is a ResponseWriter that costs nothing, so the benchmark
// measures the middleware, not the recorder.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}
func (w *nopWriter) Flush()                      {}

// BenchmarkMiddleware compares a ServeMux route served bare with the same
// route behind HTTPMetrics.Middleware, without and with a sampled span
// (the exemplar path). The difference is the middleware's cost per request.
func BenchmarkMiddleware(b *testing.B) {
	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "bench", Host: "h", NoRuntimeCollector: true})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	m, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	sampledCtx, span := tp.Tracer("bench").Start(context.Background(), "req")
	defer span.End()

	cases := []struct {
		name string
		h    http.Handler
		ctx  context.Context
	}{
		{"bare", mux, context.Background()},
		{"middleware", m.Middleware(mux), context.Background()},
		{"middleware_sampled", m.Middleware(mux), sampledCtx},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/items/7", nil).WithContext(c.ctx)
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				c.h.ServeHTTP(w, req)
			}
		})
	}
}
