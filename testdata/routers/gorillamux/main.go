// Command gorillamux is a test service routed by gorilla/mux: nested
// sub-routers, a regexp variable, method matchers and a path prefix. Its
// middleware (which gorilla runs on a match only) records the matched
// route's GetPathTemplate(), to compare with obsd's http_route.
package main

import (
	"net/http"

	"github.com/gorilla/mux"
)

func main() {
	r := mux.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			next.ServeHTTP(w, req)
			tpl, err := mux.CurrentRoute(req).GetPathTemplate()
			if err != nil {
				tpl = ""
			}
			reportRoute(req.Context(), tpl, true)
		})
	})
	r.HandleFunc("/", ok).Methods(http.MethodGet)
	r.HandleFunc("/healthz", ok)
	orders := r.PathPrefix("/orders").Subrouter()
	orders.HandleFunc("/{oid}", ok).Methods(http.MethodGet)
	orders.HandleFunc("/{oid}/items/{iid}", ok).Methods(http.MethodGet)
	orders.HandleFunc("/{oid}/items", ok).Methods(http.MethodPost)
	api := r.PathPrefix("/api/v1").Subrouter()
	api.HandleFunc("/items/{sku}", ok)
	users := api.PathPrefix("/users").Subrouter()
	users.HandleFunc("/{name}", ok)
	r.HandleFunc("/users/{uid:[0-9]+}", ok)
	r.PathPrefix("/files/").HandlerFunc(ok)
	// A handler that answers 404 itself keeps its route.
	r.HandleFunc("/things/{id}", func(w http.ResponseWriter, req *http.Request) {
		if mux.Vars(req)["id"] == "missing" {
			http.NotFound(w, req)
			return
		}
		ok(w, req)
	})
	run(r)
}
