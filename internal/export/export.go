// Package export holds what the Prometheus and OpenTelemetry exporters share:
// the identity of an instrumented service and the derivation of low-cardinality
// attributes (method, route) from an observed request, so that metrics and
// spans carry the same values and join.
package export

import (
	"strings"
)

// Service identifies one instrumented process. The same values label every
// metric series and form every span's resource.
type Service struct {
	// Name is service.name: the target's OTEL_SERVICE_NAME, else its
	// executable's base name.
	Name string
	// InstanceID is service.instance.id, unique per process: "host:pid".
	InstanceID string
	// Host is host.name of the node.
	Host string
	PID  int
	// Attrs are extra resource attributes (from the target's
	// OTEL_RESOURCE_ATTRIBUTES and obsd's own).
	Attrs map[string]string
}

// OtherMethod is what semantic conventions call a method outside the
// standard set; the original goes only into spans.
const OtherMethod = "_OTHER"

// Method returns the semconv http.request.method for a raw method.
func Method(raw string) string {
	switch raw {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return raw
	}
	return OtherMethod
}

// PatternRoute returns the path part of a ServeMux pattern
// ("[METHOD ][HOST]/path"), or "" when pattern is empty or malformed.
func PatternRoute(pattern string) string {
	if pattern == "" {
		return ""
	}
	// A method, if present, is separated from the rest by spaces or tabs.
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		pattern = strings.TrimLeft(pattern[i:], " \t")
	}
	// The host cannot contain '/', so the path starts at the first slash.
	i := strings.IndexByte(pattern, '/')
	if i < 0 {
		return ""
	}
	return pattern[i:]
}

// ServiceLabels are the label names that identify the service on every
// series obsd exports, in the order of Service.LabelValues.
var ServiceLabels = []string{"service_name", "service_instance_id", "host_name"}

// LabelValues returns the values for ServiceLabels, each made valid UTF-8
// and bounded by Clean (they come from the target's environment).
func (s Service) LabelValues() []string {
	return []string{Clean(s.Name, MaxValueLen, false), Clean(s.InstanceID, MaxValueLen, false), Clean(s.Host, MaxValueLen, false)}
}

// Clean returns s with every string Clean'd: Name, InstanceID, Host and
// Attrs (keys and values). The agent cleans each Service once, when the
// process is instrumented, so that no exporter sees raw target strings.
func (s Service) Clean() Service {
	c := s
	c.Name = Clean(s.Name, MaxValueLen, false)
	c.InstanceID = Clean(s.InstanceID, MaxValueLen, false)
	c.Host = Clean(s.Host, MaxValueLen, false)
	if s.Attrs != nil {
		c.Attrs = make(map[string]string, len(s.Attrs))
		for k, v := range s.Attrs {
			c.Attrs[Clean(k, MaxValueLen, false)] = Clean(v, MaxValueLen, false)
		}
	}
	return c
}
