//go:build go1.24

package main

import "net/http"

// serveH2C makes srv serve HTTP/2 without TLS (prior knowledge) beside
// HTTP/1, as net/http does itself from Go 1.24 (Server.Protocols).
func serveH2C(srv *http.Server) error {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	return nil
}
