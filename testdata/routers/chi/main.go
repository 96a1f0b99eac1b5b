// Command chi is a test service routed by chi v5: nested Route groups, a
// mounted sub-router with a Group, a regexp parameter and a wildcard. Its
// middleware records chi's RoutePattern() for every request, to compare
// with obsd's http_route.
package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func main() {
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			next.ServeHTTP(w, req)
			rc := chi.RouteContext(req.Context())
			pattern := rc.RoutePattern()
			reportRoute(req.Context(), pattern, pattern != "")
		})
	})
	r.Get("/", ok)
	r.Get("/healthz", ok)
	r.Route("/orders", func(r chi.Router) {
		r.Get("/", ok)
		r.Route("/{oid}", func(r chi.Router) {
			r.Get("/", ok)
			r.Get("/items/{iid}", ok)
			r.Post("/items", ok)
		})
	})
	api := chi.NewRouter()
	api.Get("/items/{sku}", ok)
	api.Group(func(r chi.Router) {
		r.Use(func(next http.Handler) http.Handler { return next })
		r.Get("/users/{name}", ok)
	})
	r.Mount("/api/v1", api)
	r.Get("/users/{uid:[0-9]+}", ok)
	r.Get("/files/*", ok)
	run(r)
}
