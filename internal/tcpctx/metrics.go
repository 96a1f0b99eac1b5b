package tcpctx

import (
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// counterSource is what the collector reads: a Propagator.
type counterSource interface {
	Counters() (Counters, error)
}

// Collector exports the program's counters as obsd_* metrics at scrape
// time and logs each loss or anomaly reason once, the first time it is
// seen non-zero.
type Collector struct {
	src counterSource
	log *slog.Logger

	mu       sync.Mutex
	logged   map[string]bool
	readErrs uint64 // guarded by mu

	options, lost, anomalies, readErrors *prometheus.Desc
	headers, headerSkips                 *prometheus.Desc
}

// NewCollector returns a Collector of src's counters (a *Propagator).
func NewCollector(src counterSource, log *slog.Logger) *Collector {
	return &Collector{
		src:    src,
		log:    log,
		logged: map[string]bool{},
		options: prometheus.NewDesc("obsd_tcp_context_options_total",
			"TCP segments that carried trace context in obsd's header option, by direction (sent, received).", []string{"direction"}, nil),
		lost: prometheus.NewDesc("obsd_tcp_context_lost_total",
			"Trace contexts that did not cross a TCP connection, by reason.", []string{"reason"}, nil),
		anomalies: prometheus.NewDesc("obsd_tcp_context_anomalies_total",
			"Connections or segments the TCP context program could not handle, by reason.", []string{"reason"}, nil),
		readErrors: prometheus.NewDesc("obsd_tcp_context_read_errors_total",
			"Scrapes that could not read the TCP context program's counters.", nil, nil),
		headers: prometheus.NewDesc("obsd_trace_headers_injected_total",
			"Outgoing HTTP/1.x, HTTP/2 and gRPC requests (without TLS) given a traceparent header (--propagate=headers).", nil, nil),
		headerSkips: prometheus.NewDesc("obsd_trace_headers_skipped_total",
			"Outgoing requests with a trace context that got no traceparent header, by reason: already_present (the request carried one; "+
				"HTTP/2: or an earlier request on its connection named traceparent in HPACK's dynamic table), "+
				"not_http1 (TLS, another protocol, or HTTP/2 on a connection not seen from its first byte), "+
				"head_too_long (the head or HTTP/2 header block was not whole in the first 4 KiB of its write, or its frame would outgrow 16 KiB), "+
				"no_room (a send buffer too full, TCP memory pressure, or the kernel could not extend the message), raced (the scan was disturbed on its CPU), "+
				"http2_connection_unread (an earlier header block on its HTTP/2 connection could not be read whole, so it may have named traceparent), "+
				"http2_stream_without_context (an HTTP/2 request no stream site gave a context: a client obsd does not follow, such as grpc-go before v1.82.1).", []string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.options
	ch <- c.lost
	ch <- c.anomalies
	ch <- c.readErrors
	ch <- c.headers
	ch <- c.headerSkips
}

type reasonCount struct {
	reason string
	n      uint64
}

func lostReasons(n Counters) []reasonCount {
	return []reasonCount{
		{"no_option_space", n.LostNoSpace},
		{"store_failed", n.LostStoreFailed},
		{"received_map_full", n.LostInFull},
	}
}

func anomalyReasons(n Counters) []reasonCount {
	return []reasonCount{
		{"malformed_option", n.Malformed},
		{"callbacks_refused", n.FlagsFailed},
		{"netns_unreadable", n.NetnsUnreadable},
		{"header_injector_refused", n.HeadersSockFailed},
		{"http2_frames_lost", n.HeadersLost},
	}
}

// headerSkips are the header injector's skips; those from no_room on lose
// a header that would have gone out (logged once).
func headerSkips(n Counters) []reasonCount {
	return []reasonCount{
		{"already_present", n.HeadersPresent},
		{"not_http1", n.HeadersNotHTTP1},
		{"head_too_long", n.HeadersTooLong},
		{"no_room", n.HeadersFailed},
		{"raced", n.HeadersRaced},
		{"http2_connection_unread", n.HeadersUnread},
		{"http2_stream_without_context", n.HeadersNoStream},
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	n, err := c.src.Counters()
	c.mu.Lock()
	if err != nil {
		c.readErrs++
	}
	readErrs := c.readErrs
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.readErrors, prometheus.CounterValue, float64(readErrs))
	if err != nil {
		c.logOnce("read_error", "reading the TCP context counters failed (logged once; see obsd_tcp_context_read_errors_total)", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.options, prometheus.CounterValue, float64(n.Written), "sent")
	ch <- prometheus.MustNewConstMetric(c.options, prometheus.CounterValue, float64(n.Parsed), "received")
	for _, r := range lostReasons(n) {
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(r.n), r.reason)
	}
	for _, r := range anomalyReasons(n) {
		ch <- prometheus.MustNewConstMetric(c.anomalies, prometheus.CounterValue, float64(r.n), r.reason)
	}
	if n.Headers {
		ch <- prometheus.MustNewConstMetric(c.headers, prometheus.CounterValue, float64(n.HeadersInjected))
		for _, r := range headerSkips(n) {
			ch <- prometheus.MustNewConstMetric(c.headerSkips, prometheus.CounterValue, float64(r.n), r.reason)
		}
	}
	c.LogNew(n)
}

// LogNew logs, once per reason, a loss (warning) or anomaly (info) counter
// of n that is non-zero. Collect calls it; call it periodically too when
// nobody scrapes.
func (c *Collector) LogNew(n Counters) {
	for _, r := range lostReasons(n) {
		if r.n > 0 {
			c.logOnce("lost/"+r.reason, "trace context lost on TCP connections (logged once; see obsd_tcp_context_lost_total)", "reason", r.reason, "count", r.n)
		}
	}
	for _, r := range anomalyReasons(n) {
		if r.n > 0 {
			c.logOnce("anomaly/"+r.reason, "TCP context program anomaly (logged once; see obsd_tcp_context_anomalies_total)", "reason", r.reason, "count", r.n)
		}
	}
	for _, r := range headerSkips(n)[3:] {
		if r.n > 0 {
			c.logOnce("lost/header_"+r.reason, "traceparent headers not added (logged once; see obsd_trace_headers_skipped_total)", "reason", r.reason, "count", r.n)
		}
	}
}

func (c *Collector) logOnce(key, msg string, args ...any) {
	c.mu.Lock()
	seen := c.logged[key]
	c.logged[key] = true
	c.mu.Unlock()
	if seen {
		return
	}
	if key == "read_error" || strings.HasPrefix(key, "lost/") {
		c.log.Warn(msg, args...)
		return
	}
	c.log.Info(msg, args...)
}
