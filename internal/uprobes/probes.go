package uprobes

import (
	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/bpf/net/http/server"
	"github.com/obsd-dev/obsd/bpf/probe"
)

// Probes is the explicit list of enabled probes. A new probe is one line here.
func Probes() []*probe.Probe {
	return []*probe.Probe{
		server.New(),
		client.New(),
	}
}
