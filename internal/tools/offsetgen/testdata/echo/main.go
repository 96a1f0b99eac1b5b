// Command echo is the template offsetgen builds with each echo v4 release. It serves one request
// through an Echo and prints the route, so that echo's Echo and its context type are reachable
// and the linker describes them in DWARF.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/labstack/echo/v4"
)

func main() {
	e := echo.New()
	e.GET("/items/:id", func(c echo.Context) error {
		fmt.Println(c.Path())
		return nil
	})
	e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/items/1", nil))
}
