package kube

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// apiHealth counts failed requests to the API server as every request of
// the client sees them, through its transport: client-go's reflector
// retries a refused connection inside the watch with backoff and reports
// nothing to the watch error handler, so only the transport sees an
// outage whole. It logs the first failure of an outage and the first
// success after one.
type apiHealth struct {
	log    *slog.Logger
	errors *prometheus.CounterVec

	mu     sync.Mutex
	failed int // consecutive failures; 0 while the API server answers
}

func newAPIHealth(log *slog.Logger) *apiHealth {
	return &apiHealth{log: log, errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "obsd_kubernetes_api_errors_total",
		Help: "Requests to the Kubernetes API server that failed: unreachable (no HTTP answer), throttled (429), denied (401, 403), server_error (5xx).",
	}, []string{"reason"})}
}

// wrap is a rest.Config.WrapTransport.
func (h *apiHealth) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		switch {
		case err != nil && (errors.Is(err, context.Canceled) || req.Context().Err() != nil):
			// obsd stopping, or the caller gave up: not the API server's doing.
		case err != nil:
			h.fail("unreachable", err.Error())
		case resp.StatusCode == http.StatusTooManyRequests:
			h.fail("throttled", resp.Status)
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			h.fail("denied", resp.Status)
		case resp.StatusCode >= 500:
			h.fail("server_error", resp.Status)
		default:
			h.ok()
		}
		return resp, err
	})
}

func (h *apiHealth) fail(reason, detail string) {
	h.errors.WithLabelValues(reason).Inc()
	h.mu.Lock()
	h.failed++
	first := h.failed == 1
	h.mu.Unlock()
	if first {
		h.log.Warn("Kubernetes API server request failed; client-go retries with backoff, obsd keeps what it had (logged once per outage; see obsd_kubernetes_api_errors_total)",
			"reason", reason, "err", detail)
	}
}

func (h *apiHealth) ok() {
	h.mu.Lock()
	n := h.failed
	h.failed = 0
	h.mu.Unlock()
	if n > 0 {
		h.log.Info("Kubernetes API server answers again", "failed_requests", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
