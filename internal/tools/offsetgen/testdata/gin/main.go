// Command gin is the template offsetgen builds with each gin release. It serves one request
// through an Engine and prints the route, so that gin's Engine and Context are reachable and the
// linker describes them in DWARF.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/gin-gonic/gin"
)

func main() {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.GET("/items/:id", func(c *gin.Context) { fmt.Println(c.FullPath()) })
	e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/items/1", nil))
}
