package push

import (
	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
)

// Routes mounts the push rules, pushers and notifications endpoints.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	c := api.ClientAPI(r, requireAuth) // v3, and r0 for the r0 API's endpoints
	c.GET("/pushrules", s.getAllRules)
	c.GET("/pushrules/", s.getAllRules)
	c.GET("/pushrules/global", s.getGlobalRules)
	c.GET("/pushrules/global/", s.getGlobalRules)
	c.GET("/pushrules/global/:kind/:ruleId", s.getRule)
	c.PUT("/pushrules/global/:kind/:ruleId", s.putRule)
	c.DELETE("/pushrules/global/:kind/:ruleId", s.deleteRule)
	c.GET("/pushrules/global/:kind/:ruleId/enabled", s.getRuleEnabled)
	c.PUT("/pushrules/global/:kind/:ruleId/enabled", s.putRuleEnabled)
	c.GET("/pushrules/global/:kind/:ruleId/actions", s.getRuleActions)
	c.PUT("/pushrules/global/:kind/:ruleId/actions", s.putRuleActions)
	c.GET("/pushers", s.getPushers)
	c.POST("/pushers/set", s.setPusher)
	c.GET("/notifications", s.getNotifications)

	ts := r.Group("/_matrix/client/unstable/io.element.msc4306/rooms/:roomId/thread/:eventId", requireAuth)
	ts.GET("/subscription", s.getThreadSubscription)
	ts.PUT("/subscription", s.putThreadSubscription)
	ts.DELETE("/subscription", s.deleteThreadSubscription)
}
