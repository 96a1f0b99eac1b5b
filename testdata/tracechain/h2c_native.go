//go:build go1.24

package main

import "net/http"

// h2cTransport speaks HTTP/2 without TLS (prior knowledge) to http URLs,
// as net/http does itself from Go 1.24 (Transport.Protocols).
func h2cTransport() (http.RoundTripper, error) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p}, nil
}
