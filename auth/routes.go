package auth

import (
	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Routes mounts every path auth serves. Client paths are served under
// /_matrix/client/v3, and under r0 those the r0 API had (api.ClientAPI);
// the few endpoints the spec places under v1 are there too.
func (s *Service) Routes(r *gin.Engine) {
	s.clientRoutes(api.ClientAPI(r))
	v1 := r.Group("/_matrix/client/v1")
	v1.GET("/register/m.login.registration_token/validity", api.Handle(s.tokenValidity))
	v1.POST("/login/get_token", s.Middleware(), api.Handle(s.getLoginToken))
	v1.POST("/refresh", api.Handle(s.refresh))

	msc3391 := r.Group("/_matrix/client/unstable/org.matrix.msc3391", s.Middleware())
	msc3391.DELETE("/user/:userId/account_data/:type", api.Handle(s.deleteAccountDataHandler))
	msc3391.DELETE("/user/:userId/rooms/:roomId/account_data/:type", api.Handle(s.deleteAccountDataHandler))

	r.GET("/_matrix/federation/v1/openid/userinfo", api.Handle(s.openIDUserinfo))

	r.GET("/_synapse/admin/v1/register", api.Handle(s.sharedSecretNonce))
	r.POST("/_synapse/admin/v1/register", api.Handle(s.sharedSecretRegister))
}

func (s *Service) clientRoutes(g *api.Versioned) {
	// Without an access token.
	g.GET("/login", api.Handle(s.getLoginFlows))
	g.POST("/login", api.Handle(s.login))
	g.POST("/register", api.Handle(s.register))
	g.GET("/register/available", api.Handle(s.registerAvailable))
	g.POST("/register/email/requestToken", api.Handle(s.requestToken3PID(spec.ErrThreepidDenied)))
	g.POST("/register/msisdn/requestToken", api.Handle(s.requestToken3PID(spec.ErrThreepidDenied)))
	g.POST("/account/password/email/requestToken", api.Handle(s.requestToken3PID(spec.ErrThreepidNotFound)))
	g.POST("/account/password/msisdn/requestToken", api.Handle(s.requestToken3PID(spec.ErrThreepidNotFound)))
	g.POST("/refresh", api.Handle(s.refresh))
	g.GET("/profile/:userId", s.profileReader(), api.Handle(s.getProfile))
	g.GET("/profile/:userId/:keyName", s.profileReader(), api.Handle(s.getProfileField))

	// With one.
	a := g.Group("", s.Middleware())
	a.POST("/logout", api.Handle(s.logout))
	a.POST("/logout/all", api.Handle(s.logoutAll))
	a.GET("/account/whoami", api.Handle(s.whoami))

	a.GET("/devices", api.Handle(s.getDevices))
	a.GET("/devices/:deviceId", api.Handle(s.getDevice))
	a.PUT("/devices/:deviceId", api.Handle(s.putDevice))
	a.DELETE("/devices/:deviceId", api.Handle(s.deleteDevice))
	a.POST("/delete_devices", api.Handle(s.deleteDevices))

	a.POST("/account/password", api.Handle(s.changePassword))
	a.POST("/account/deactivate", api.Handle(s.deactivate))
	a.GET("/account/3pid", api.Handle(s.get3PIDs))
	a.POST("/account/3pid", api.Handle(s.add3PID))
	a.POST("/account/3pid/add", api.Handle(s.add3PID))
	a.POST("/account/3pid/bind", api.Handle(s.add3PID))
	a.POST("/account/3pid/delete", api.Handle(s.delete3PID))
	a.POST("/account/3pid/unbind", api.Handle(s.delete3PID))
	a.POST("/account/3pid/email/requestToken", api.Handle(s.requestToken3PID(spec.ErrThreepidMediumNotSupported)))
	a.POST("/account/3pid/msisdn/requestToken", api.Handle(s.requestToken3PID(spec.ErrThreepidMediumNotSupported)))

	a.PUT("/profile/:userId/:keyName", api.Handle(s.putProfileField))
	a.DELETE("/profile/:userId/:keyName", api.Handle(s.deleteProfileField))

	accountData := s.limiter.PerUser(RateAccountData)
	a.GET("/user/:userId/account_data/:type", api.Handle(s.getAccountData))
	a.PUT("/user/:userId/account_data/:type", accountData, api.Handle(s.putAccountDataHandler))
	a.GET("/user/:userId/rooms/:roomId/account_data/:type", api.Handle(s.getAccountData))
	a.PUT("/user/:userId/rooms/:roomId/account_data/:type", accountData, api.Handle(s.putAccountDataHandler))
	a.GET("/user/:userId/rooms/:roomId/tags", api.Handle(s.getTags))
	a.PUT("/user/:userId/rooms/:roomId/tags/:tag", accountData, api.Handle(s.putTag))
	a.DELETE("/user/:userId/rooms/:roomId/tags/:tag", accountData, api.Handle(s.deleteTag))

	a.POST("/user/:userId/openid/request_token", api.Handle(s.requestOpenIDToken))

	a.POST("/user_directory/search", api.Handle(s.searchUserDirectory))
}
