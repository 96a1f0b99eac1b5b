package agent

import (
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// signal turns the events of one probe.Kind into metrics and spans. Each
// kind has its own file here (http_server.go, …), beside its own files in
// internal/export/prom and internal/export/otel; the agent finds it by the
// event's kind and never looks inside an event itself.
type signal interface {
	// observe records one event of the signal's kind for svc, with a span
	// when spans is set and the probe sampled it.
	observe(svc export.Service, spans bool, ev probe.Event)
	// forget drops what the signal keeps of an exited process.
	forget(svc export.Service)
}
