package uprobes

import (
	grpcclient "github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	grpcserver "github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/server"
	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/bpf/net/http/server"
	"github.com/obsd-dev/obsd/bpf/probe"
)

// Probes is the explicit list of enabled probes. A new probe is one line here.
func Probes() []*probe.Probe {
	return []*probe.Probe{
		server.New(),
		grpcserver.New(),
		grpcclient.New(),
		client.New(),
	}
}
