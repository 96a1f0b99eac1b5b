package manual

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// HTTPClientMetrics records outbound requests as the semantic conventions'
// client histogram, labelled as obsd labels its server series:
//
//	http_client_request_duration_seconds{http_request_method,server_address,server_port,http_response_status_code,error_type}
//
// in seconds, from RoundTrip's start to the response headers (the body is
// the caller's to read), with DurationBuckets. http_response_status_code
// is "" and error_type names the failure ("timeout", "canceled",
// "connection_refused", "dns", "error") when no response came; error_type
// is "" otherwise. A sampled span in the request's context becomes the
// exemplar.
type HTTPClientMetrics struct {
	duration *prometheus.HistogramVec
}

// NewHTTPClientMetrics creates the histogram and registers it on reg. It
// fails when the name is already registered there.
func NewHTTPClientMetrics(reg prometheus.Registerer) (*HTTPClientMetrics, error) {
	m := &HTTPClientMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_client_request_duration_seconds",
		Help:    "Duration of HTTP client requests, from sending to the response headers, in seconds.",
		Buckets: DurationBuckets,
	}, []string{"http_request_method", "server_address", "server_port", "http_response_status_code", "error_type"})}
	if err := reg.Register(m.duration); err != nil {
		return nil, fmt.Errorf("registering http_client_request_duration_seconds: %w", err)
	}
	return m, nil
}

// Duration returns the histogram, for testutil or to initialise series.
func (m *HTTPClientMetrics) Duration() *prometheus.HistogramVec { return m.duration }

// Transport wraps base (nil means http.DefaultTransport) so that every
// request through it is recorded. Combine with TraceTransport as
// m.Transport(TraceTransport(nil)) so the exemplar's span exists.
func (m *HTTPClientMetrics) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := base.RoundTrip(r)
		d := time.Since(start).Seconds()
		host, port := r.URL.Hostname(), r.URL.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[r.URL.Scheme]
		}
		status, errType := "", ""
		if err != nil {
			errType = clientErrorType(err)
		} else {
			status = strconv.Itoa(resp.StatusCode)
		}
		obs := m.duration.WithLabelValues(semconvMethod(r.Method), host, port, status, errType)
		// The client span, if any, is a child of the context's span; the
		// exemplar points at the trace, which is what a dashboard needs.
		if sc := trace.SpanContextFromContext(r.Context()); sc.IsSampled() {
			obs.(prometheus.ExemplarObserver).ObserveWithExemplar(d, prometheus.Labels{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()})
		} else {
			obs.Observe(d)
		}
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// clientErrorType is a bounded name for a failed round trip.
func clientErrorType(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.As(err, &dnsErr):
		return "dns"
	case isConnRefused(err):
		return "connection_refused"
	default:
		return "error"
	}
}

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
