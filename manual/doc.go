// Package manual is what a Go service imports for the parts of monitoring
// that obsd's probes cannot see from outside the process:
//
//   - health checks for Kubernetes probes ([Health]: /healthz for liveness,
//     /readyz for readiness, JSON answers listing every check, per-check
//     deadlines of 800 ms by default, failure thresholds, non-critical
//     checks, per-check metrics, drain on SIGTERM with [Serve]) and
//     dependency checks that wait for an answer ([SQLCheck], [RedisCheck],
//     [HTTPCheck], [TCPCheck]),
//   - Prometheus metrics on a registry of its own ([NewRegistry],
//     [HTTPMetrics], [HTTPClientMetrics], [Handler]) with constant
//     service_name and host labels, obsd's semconv duration histogram and
//     route rules, and exemplars that carry trace_id,
//   - Go runtime statistics sampled on an interval rather than per scrape
//     ([RuntimeCollector]),
//   - OpenTelemetry tracing configured by the SDK's OTEL_* variables, with
//     a production-safe sampler ([SetupTracing], [TraceHandler],
//     [TraceTransport], [HasTrace]).
//
// gRPC services use the subpackage manualgrpc for the standard health
// service and the otelgrpc stats handlers, so HTTP-only programs do not
// link gRPC server code for it.
//
// Every option struct works at its zero value; each field says what zero
// means. Constructors are NewX(opts). Errors name what was being done.
package manual
