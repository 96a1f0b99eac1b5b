package main

import (
	"io"
	"net/http"
)

// longPattern is longer than the 128 bytes of a pattern obsd's probe
// records, and its byte 128 falls inside a character (each is 3 bytes).
const longPattern = "/日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語/"

// registerLabelRoutes adds what the label tests need
// (internal/test/e2e/nethttp/labels_test.go). It builds with every Go from
// 1.21 on.
func registerLabelRoutes(mux *http.ServeMux) {
	// "/users/{id}/", whose redirects the label tests send, is in
	// routes_go122.go (Go 1.22 on; before, braces are literal).
	mux.HandleFunc(longPattern, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "long\n")
	})
}
