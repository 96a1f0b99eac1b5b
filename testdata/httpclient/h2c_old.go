//go:build !go1.24

package main

import (
	"context"
	"net/http"
)

// h2cSupported says this client can speak h2c (http.Protocols, Go 1.24+).
const h2cSupported = false

func h2cRequests(*tally, string, func(*http.Client, context.Context, string, string)) {}
