// Package propagate decides how obsd carries trace context between
// services (--propagate) and reports, once, what this kernel allows of it.
//
// Two mechanisms exist, and both may be asked for ("tcp,headers"): they are
// complementary, not alternatives. tcp carries the context in a TCP header
// option between two obsd-instrumented services and needs no write into
// any target's memory, so it works under kernel lockdown; headers writes a
// W3C traceparent header into outgoing HTTP/1.x requests, which services
// that do not run under obsd (the OpenTelemetry SDK, otelhttp) understand
// too. Neither writes into a target's memory (no bpf_probe_write_user, so
// both work under kernel lockdown): headers adds its line to the kernel's
// copy of the message being sent (internal/tcpctx).
package propagate

import (
	"fmt"
	"strings"
)

// Mode is a set of propagation mechanisms; the zero value is none.
type Mode uint8

// The mechanisms. A Mode holds any combination of them.
const (
	// TCP carries trace context in a TCP header option written and read
	// by sock_ops programs (issue 11 §3).
	TCP Mode = 1 << iota
	// Headers writes a traceparent header into outgoing HTTP and gRPC
	// requests with bpf_probe_write_user (issue 11 §4).
	Headers

	None Mode = 0
)

// mechanisms lists every mechanism in the order String and the results
// use.
var mechanisms = []struct {
	mode Mode
	name string
}{{TCP, "tcp"}, {Headers, "headers"}}

// Accepted is what --propagate accepts, for help and error texts.
const Accepted = `none, tcp, headers or a comma-separated list such as "tcp,headers"`

// Parse reads a --propagate value: "none", one mechanism, or a
// comma-separated list of distinct mechanisms. Spaces around items are
// ignored; case matters, as for every other obsd flag value. An empty value
// is an error (unset means none, and the caller decides what unset is).
func Parse(s string) (Mode, error) {
	if strings.TrimSpace(s) == "" {
		return None, fmt.Errorf("empty value; want %s", Accepted)
	}
	var m Mode
	items := strings.Split(s, ",")
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "none" {
			if len(items) > 1 {
				return None, fmt.Errorf("none cannot be combined with a mechanism in %q", s)
			}
			return None, nil
		}
		one, ok := byName(item)
		switch {
		case item == "":
			return None, fmt.Errorf("empty item in %q; want %s", s, Accepted)
		case !ok:
			return None, fmt.Errorf("unknown mechanism %q; want %s", item, Accepted)
		case m&one != 0:
			return None, fmt.Errorf("%s given twice in %q", item, s)
		}
		m |= one
	}
	return m, nil
}

func byName(name string) (Mode, bool) {
	for _, x := range mechanisms {
		if x.name == name {
			return x.mode, true
		}
	}
	return None, false
}

// String is the value Parse reads back: "none", "tcp", "headers" or
// "tcp,headers".
func (m Mode) String() string {
	var names []string
	for _, x := range mechanisms {
		if m&x.mode != 0 {
			names = append(names, x.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// Has reports whether every mechanism of x is in m.
func (m Mode) Has(x Mode) bool { return x != None && m&x == x }
