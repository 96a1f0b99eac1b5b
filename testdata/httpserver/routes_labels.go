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
	// From Go 1.22, ServeMux answers /users/42 itself with a 301 to
	// /users/42/ (and for CONNECT /users/42 too); Go 1.23-1.25 then set
	// Request.Pattern to the concrete "/users/42/". Before 1.22 the braces
	// are literal, and /users/42 is a 404.
	mux.HandleFunc("/users/{id}/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "user\n")
	})
	mux.HandleFunc(longPattern, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "long\n")
	})
}
