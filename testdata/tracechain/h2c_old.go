//go:build !go1.24

package main

import (
	"errors"
	"net/http"
)

func h2cTransport() (http.RoundTripper, error) {
	return nil, errors.New("-h2c needs Go 1.24 or newer (Transport.Protocols)")
}
