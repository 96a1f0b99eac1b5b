//go:build !go1.24

package main

import (
	"errors"
	"net/http"
)

// serveH2C: before Go 1.24 net/http serves h2c only through x/net's
// h2c handler (build with -tags h2c instead).
func serveH2C(*http.Server) error {
	return errors.New("-h2c needs Go 1.24 or later; build with -tags h2c for x/net's h2c handler")
}
