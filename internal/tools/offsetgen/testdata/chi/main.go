// Command chi is the template offsetgen builds with each chi v5 release. It serves one request
// through a Mux and prints the route pattern, so that chi's Mux and Context are reachable and the
// linker describes them in DWARF.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/go-chi/chi/v5"
)

func main() {
	r := chi.NewRouter()
	r.Get("/items/{id}", func(w http.ResponseWriter, req *http.Request) {
		fmt.Println(chi.RouteContext(req.Context()).RoutePattern())
	})
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/items/1", nil))
}
