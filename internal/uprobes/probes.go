package uprobes

import (
	"github.com/obsd-dev/obsd/bpf/github.com/gin-gonic/gin"
	chi "github.com/obsd-dev/obsd/bpf/github.com/go-chi/chi/v5"
	"github.com/obsd-dev/obsd/bpf/github.com/gorilla/mux"
	echo "github.com/obsd-dev/obsd/bpf/github.com/labstack/echo/v4"
	grpcclient "github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	grpcserver "github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/server"
	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/bpf/net/http/servemux"
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
		// Routes: each hands its routes to the server probe; servemux
		// only where a process needs it (OnDemand).
		servemux.New(),
		chi.New(),
		gin.New(),
		echo.New(),
		mux.New(),
	}
}
