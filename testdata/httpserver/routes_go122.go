//go:build go1.22

package main

import (
	"fmt"
	"net/http"
)

func registerRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("item " + r.PathValue("id") + "\n"))
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		status(w, r.PathValue("code"))
	})
	// A pattern with a trailing slash: ServeMux redirects "/users/42" to
	// "/users/42/" itself (301), and Go 1.23-1.25 then set Request.Pattern
	// to the concrete "/users/42/" (every version does for CONNECT).
	mux.HandleFunc("/users/{id}/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("user " + r.PathValue("id") + "\n"))
	})
	// A pattern built at run time, as from configuration: its bytes live on
	// the heap, not in .rodata.
	mux.HandleFunc(fmt.Sprintf("GET /%s/{name}", "dyn"), func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("dyn " + r.PathValue("name") + "\n"))
	})
}
