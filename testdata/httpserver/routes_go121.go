//go:build !go1.22

package main

import (
	"net/http"
	"strings"
)

// Before Go 1.22 ServeMux has no patterns: routes are path prefixes.
func registerRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/items/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("item " + strings.TrimPrefix(r.URL.Path, "/items/") + "\n"))
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		status(w, strings.TrimPrefix(r.URL.Path, "/status/"))
	})
	mux.HandleFunc("/dyn/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("dyn " + strings.TrimPrefix(r.URL.Path, "/dyn/") + "\n"))
	})
}
