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
	// A pattern built at run time, as from configuration: its bytes live on
	// the heap, not in .rodata.
	mux.HandleFunc(fmt.Sprintf("GET /%s/{name}", "dyn"), func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("dyn " + r.PathValue("name") + "\n"))
	})
}
