package agent

import (
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
)

// httpClient is the signal of probe.KindHTTPClient: one
// http_client_request_duration_seconds observation and one CLIENT span per
// round trip, with the same labels.
type httpClient struct {
	prom  *prom.HTTPClient
	spans *otelexport.Exporter
}

func (h *httpClient) observe(svc export.Service, spans bool, ev probe.Event) {
	r, ok := ev.(client.Request)
	if !ok {
		return
	}
	l := h.labels(svc, r, 1)
	var sc trace.SpanContext
	if spans {
		sc = h.spans.HTTPClientSpan(svc, r, l)
	}
	h.prom.Observe(svc, r, l, sc)
}

// labels are r's, the server address bounded per process; r stands for n
// requests (an overflow counts n: see prom.Kernel.New).
func (h *httpClient) labels(svc export.Service, r client.Request, n uint64) export.HTTPClientLabels {
	address, port := h.prom.Address(svc, r, n)
	return export.NewHTTPClientLabels(r, address, port)
}

func (h *httpClient) forget(svc export.Service) { h.prom.Forget(svc) }

// newHTTPClient creates the signal and registers its collector (unit
// tests build an Agent without a registry).
func (a *Agent) newHTTPClient() *httpClient {
	h := &httpClient{prom: prom.NewHTTPClient(a.log), spans: a.spans}
	kernel := a.kernelOf(probe.KindHTTPClient)
	h.prom.SetKernel(func() ([]prom.HTTPClientKernel, error) {
		ks, err := kernel()
		out := make([]prom.HTTPClientKernel, 0, len(ks))
		for _, k := range ks {
			if r, ok := k.Series.(client.Request); ok {
				out = append(out, prom.HTTPClientKernel{Service: k.Service, Labels: h.labels(k.Service, r, k.New), Buckets: k.Buckets, SumNS: k.SumNS})
			}
		}
		return out, err
	})
	if a.reg != nil {
		a.reg.MustRegister(h.prom)
	}
	return h
}
