package otelexport

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// defaultEndpoint is where otlptracegrpc sends when nothing is configured.
const defaultEndpoint = "localhost:4317"

// collector is what readiness dials: a network and address, or nothing
// when the gRPC target is of a kind a plain dial cannot check.
type collector struct {
	network, addr string
}

// collectorFromEnv mirrors how otlptracegrpc picks its target from
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT: an
// http(s) URL gives its host (gRPC's default port 443 when none), a bare
// "host:port" is used as is. The exporter only logs an unparsable endpoint
// and falls back to localhost; we refuse it instead.
func collectorFromEnv(getenv func(string) string) (collector, error) {
	key, v := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	if v == "" {
		key, v = "OTEL_EXPORTER_OTLP_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	}
	if v == "" {
		return collector{"tcp", defaultEndpoint}, nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return collector{}, fmt.Errorf("parsing %s: %w", key, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return collector{}, fmt.Errorf("parsing %s: no host in %q", key, v)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		return collector{"tcp", host}, nil
	case "unix":
		return collector{"unix", u.Path}, nil
	}
	// "collector:4317" parses as scheme "collector"; gRPC sees a plain target.
	if _, _, err := net.SplitHostPort(v); err == nil {
		return collector{"tcp", v}, nil
	}
	// dns:///, passthrough: and the like resolve inside gRPC; readiness
	// then rests on export results alone.
	return collector{}, nil
}

// dial checks that the collector accepts connections.
func (c collector) dial(ctx context.Context) error {
	if c.addr == "" {
		return nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.addr)
	if err != nil {
		return fmt.Errorf("reaching the OTLP collector: %w", err)
	}
	return conn.Close()
}
