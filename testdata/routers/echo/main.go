// Command echo is a test service routed by echo v4: nested groups,
// parameters at several depths and a wildcard. Its middleware records
// echo's Path() for every request, to compare with obsd's http_route.
package main

import (
	"github.com/labstack/echo/v4"
)

func main() {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := next(c); err != nil {
				c.Error(err) // the status is set now, not after the middleware
			}
			reportRoute(c.Request().Context(), c.Path(), c.Path() != "")
			return nil
		}
	})
	h := func(c echo.Context) error { return c.String(200, "ok\n") }
	e.GET("/", h)
	e.GET("/healthz", h)
	orders := e.Group("/orders")
	orders.GET("", h)
	orders.GET("/:oid", h)
	orders.GET("/:oid/items/:iid", h)
	orders.POST("/:oid/items", h)
	api := e.Group("/api/v1")
	api.GET("/items/:sku", h)
	users := api.Group("/users")
	users.GET("/:name", h)
	e.GET("/users/:uid", h)
	e.GET("/files/*", h)
	run(e)
}
