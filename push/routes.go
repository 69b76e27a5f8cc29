package push

import (
	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
)

// Routes mounts the push rules, pushers and notifications endpoints.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	c := api.ClientAPI(r, requireAuth) // v3, and r0 for the r0 API's endpoints
	c.GET("/pushrules", api.Handle(s.getAllRules))
	c.GET("/pushrules/", api.Handle(s.getAllRules))
	c.GET("/pushrules/global", api.Handle(s.getGlobalRules))
	c.GET("/pushrules/global/", api.Handle(s.getGlobalRules))
	c.GET("/pushrules/global/:kind/:ruleId", api.Handle(s.getRule))
	c.PUT("/pushrules/global/:kind/:ruleId", api.Handle(s.putRule))
	c.DELETE("/pushrules/global/:kind/:ruleId", api.Handle(s.deleteRule))
	c.GET("/pushrules/global/:kind/:ruleId/enabled", api.Handle(s.getRuleEnabled))
	c.PUT("/pushrules/global/:kind/:ruleId/enabled", api.Handle(s.putRuleEnabled))
	c.GET("/pushrules/global/:kind/:ruleId/actions", api.Handle(s.getRuleActions))
	c.PUT("/pushrules/global/:kind/:ruleId/actions", api.Handle(s.putRuleActions))
	c.GET("/pushers", api.Handle(s.getPushers))
	c.POST("/pushers/set", api.Handle(s.setPusher))
	c.GET("/notifications", api.Handle(s.getNotifications))

	ts := r.Group("/_matrix/client/unstable/io.element.msc4306/rooms/:roomId/thread/:eventId", requireAuth)
	ts.GET("/subscription", api.Handle(s.getThreadSubscription))
	ts.PUT("/subscription", api.Handle(s.putThreadSubscription))
	ts.DELETE("/subscription", api.Handle(s.deleteThreadSubscription))
}
