package api

import "github.com/gin-gonic/gin"

// Handler is how a route handler is written: it answers on c, or returns
// the error that the router renders as a Matrix error (a *spec.Error as
// is, anything else as a logged 500). Handlers never call c.Error.
type Handler func(c *gin.Context) error

// Handle adapts a Handler to gin. Registering one is Handle(h); a group's
// middleware stays a gin.HandlerFunc, or Middleware(h) for the same shape.
func Handle(h Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			_ = c.Error(err)
			c.Abort()
		}
	}
}

// Middleware adapts a Handler that guards a route: nil goes on to the next
// handler, an error stops the chain and is rendered.
func Middleware(h Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			_ = c.Error(err)
			c.Abort()
			return
		}
		c.Next()
	}
}
