// Command gin is a test service routed by gin: nested groups, parameters
// at several depths and a catch-all. Its middleware records gin's
// FullPath() for every request, to compare with obsd's http_route.
package main

import (
	"github.com/gin-gonic/gin"
)

func main() {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.Use(func(c *gin.Context) {
		c.Next()
		reportRoute(c.Request.Context(), c.FullPath(), c.FullPath() != "")
	})
	h := func(c *gin.Context) { c.String(200, "ok\n") }
	e.GET("/", h)
	e.GET("/healthz", h)
	orders := e.Group("/orders")
	orders.GET("/", h)
	orders.GET("/:oid", h)
	orders.GET("/:oid/items/:iid", h)
	orders.POST("/:oid/items", h)
	api := e.Group("/api/v1")
	api.GET("/items/:sku", h)
	users := api.Group("/users")
	users.GET("/:name", h)
	e.GET("/users/:uid", h)
	e.GET("/files/*path", h)
	run(e)
}
