package agent

import (
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
)

// httpServer is the signal of probe.KindHTTPServer: one
// http_server_request_duration_seconds observation and one SERVER span per
// request, both labelled with the same route.
type httpServer struct {
	routes *export.Routes
	prom   *prom.HTTPServer
	spans  *otelexport.Exporter
	inner  *innerMux // nil: no on-demand inner-mux probe
}

func (h *httpServer) observe(svc export.Service, spans bool, ev probe.Event) {
	r, ok := ev.(probe.Request)
	if !ok {
		return
	}
	if h.inner != nil {
		h.inner.request(svc.PID, r)
	}
	// One route per request, so that metrics and span agree.
	route := h.routes.Route(svc, r)
	var sc trace.SpanContext
	if spans {
		sc = h.spans.HTTPServerSpan(svc, r, route)
	}
	h.prom.Observe(svc, r, route, sc)
}

func (h *httpServer) forget(svc export.Service) {
	h.prom.Forget(svc)
	if h.inner != nil {
		h.inner.forget(svc.PID)
	}
}
