//go:build go1.24

package main

import (
	"context"
	"net/http"
)

// h2cSupported says this client can speak h2c (http.Protocols, Go 1.24+).
const h2cSupported = true

func h2cRequests(t *tally, base string, do func(*http.Client, context.Context, string, string)) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	for i := 0; i < 4; i++ {
		do(&http.Client{Transport: counting{tr, t}}, context.Background(), "GET", parseURL(base).JoinPath("ok").String())
	}
}
