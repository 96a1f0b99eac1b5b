//go:build h2c

package main

import (
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// With -tags h2c, plain HTTP goes through x/net's h2c handler, which
// hijacks the HTTP/2 preface ("PRI *") and "Upgrade: h2c" requests and
// serves HTTP/2 on the connection itself; and HTTPS is served by x/net's
// HTTP/2 server (http2.ConfigureServer) rather than net/http's. The e2e
// tests build it in a module of its own that requires golang.org/x/net.
func init() {
	wrap = func(h http.Handler) http.Handler { return h2c.NewHandler(h, &http2.Server{}) }
	configureTLS = func(srv *http.Server) error { return http2.ConfigureServer(srv, &http2.Server{}) }
}
