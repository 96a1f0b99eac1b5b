// Package manual is what a Go service imports for the parts of monitoring
// that obsd's probes cannot see from outside the process:
//
//   - health checks for Kubernetes probes ([Health]: /healthz for liveness,
//     /readyz for readiness, JSON answers, per-check deadlines, drain on
//     SIGTERM),
//   - Prometheus metrics on a registry of its own ([NewRegistry],
//     [HTTPMetrics], [Handler]) with constant service_name and host labels
//     and exemplars that carry trace_id,
//   - Go runtime statistics sampled on an interval rather than per scrape
//     ([RuntimeCollector]),
//   - OpenTelemetry tracing with a production-safe sampler ([SetupTracing],
//     [TraceHandler], [TraceTransport], [HasTrace]).
//
// gRPC services use the subpackage manualgrpc for the standard health
// service and the otelgrpc stats handlers, so HTTP-only programs do not
// link gRPC server code for it.
//
// Every option struct works at its zero value; each field says what zero
// means. Constructors are NewX(opts). Errors name what was being done.
package manual
