// Command gorillamux is the template offsetgen builds with each gorilla/mux release. It serves
// one request through a Router and prints the route's path template, so that gorilla's Route,
// routeConf and route regexps are reachable and the linker describes them in DWARF.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/gorilla/mux"
)

func main() {
	r := mux.NewRouter()
	r.HandleFunc("/items/{id}", func(w http.ResponseWriter, req *http.Request) {
		fmt.Println(mux.CurrentRoute(req).GetPathTemplate())
	})
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/items/1", nil))
}
