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
	v1.GET("/register/m.login.registration_token/validity", s.tokenValidity)
	v1.POST("/login/get_token", s.Middleware(), s.getLoginToken)
	v1.POST("/refresh", s.refresh)

	msc3391 := r.Group("/_matrix/client/unstable/org.matrix.msc3391", s.Middleware())
	msc3391.DELETE("/user/:userId/account_data/:type", s.deleteAccountDataHandler(false))
	msc3391.DELETE("/user/:userId/rooms/:roomId/account_data/:type", s.deleteAccountDataHandler(true))

	r.GET("/_matrix/federation/v1/openid/userinfo", s.openIDUserinfo)

	r.GET("/_synapse/admin/v1/register", s.sharedSecretNonce)
	r.POST("/_synapse/admin/v1/register", s.sharedSecretRegister)
}

func (s *Service) clientRoutes(g *api.Versioned) {
	// Without an access token.
	g.GET("/login", s.getLoginFlows)
	g.POST("/login", s.login)
	g.POST("/register", s.register)
	g.GET("/register/available", s.registerAvailable)
	g.POST("/register/email/requestToken", s.requestToken3PID(spec.ErrThreepidDenied))
	g.POST("/register/msisdn/requestToken", s.requestToken3PID(spec.ErrThreepidDenied))
	g.POST("/account/password/email/requestToken", s.requestToken3PID(spec.ErrThreepidNotFound))
	g.POST("/account/password/msisdn/requestToken", s.requestToken3PID(spec.ErrThreepidNotFound))
	g.POST("/refresh", s.refresh)
	g.GET("/profile/:userId", s.profileReader(), s.getProfile)
	g.GET("/profile/:userId/:keyName", s.profileReader(), s.getProfileField)

	// With one.
	a := g.Group("", s.Middleware())
	a.POST("/logout", s.logout)
	a.POST("/logout/all", s.logoutAll)
	a.GET("/account/whoami", s.whoami)

	a.GET("/devices", s.getDevices)
	a.GET("/devices/:deviceId", s.getDevice)
	a.PUT("/devices/:deviceId", s.putDevice)
	a.DELETE("/devices/:deviceId", s.deleteDevice)
	a.POST("/delete_devices", s.deleteDevices)

	a.POST("/account/password", s.changePassword)
	a.POST("/account/deactivate", s.deactivate)
	a.GET("/account/3pid", s.get3PIDs)
	a.POST("/account/3pid", s.add3PID)
	a.POST("/account/3pid/add", s.add3PID)
	a.POST("/account/3pid/bind", s.add3PID)
	a.POST("/account/3pid/delete", s.delete3PID)
	a.POST("/account/3pid/unbind", s.delete3PID)
	a.POST("/account/3pid/email/requestToken", s.requestToken3PID(errThreepidMediumNotSupported))
	a.POST("/account/3pid/msisdn/requestToken", s.requestToken3PID(errThreepidMediumNotSupported))

	a.PUT("/profile/:userId/:keyName", s.putProfileField)
	a.DELETE("/profile/:userId/:keyName", s.deleteProfileField)

	accountData := s.limiter.PerUser(RateAccountData)
	a.GET("/user/:userId/account_data/:type", s.getAccountData(false))
	a.PUT("/user/:userId/account_data/:type", accountData, s.putAccountDataHandler(false))
	a.GET("/user/:userId/rooms/:roomId/account_data/:type", s.getAccountData(true))
	a.PUT("/user/:userId/rooms/:roomId/account_data/:type", accountData, s.putAccountDataHandler(true))
	a.GET("/user/:userId/rooms/:roomId/tags", s.getTags)
	a.PUT("/user/:userId/rooms/:roomId/tags/:tag", accountData, s.putTag)
	a.DELETE("/user/:userId/rooms/:roomId/tags/:tag", accountData, s.deleteTag)

	a.POST("/user/:userId/openid/request_token", s.requestOpenIDToken)

	a.POST("/user_directory/search", s.searchUserDirectory)
}
