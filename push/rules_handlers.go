package push

import (
	"encoding/json"
	"net/http"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// GET /_matrix/client/v3/pushrules/: every ruleset (only "global" exists).
func (s *Service) getAllRules(c *gin.Context) {
	rs, err := s.Rules(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"global": rs})
}

// GET /_matrix/client/v3/pushrules/global/: the global ruleset.
func (s *Service) getGlobalRules(c *gin.Context) {
	rs, err := s.Rules(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, rs)
}

// ruleParams reads {kind} and {ruleId} from the path.
func ruleParams(c *gin.Context) (kind, id string, ok bool) {
	kind, id = c.Param("kind"), c.Param("ruleId")
	if !validKind(kind) {
		c.Error(spec.InvalidParam("unknown push rule kind %q: use override, content, room, sender or underride", kind))
		return "", "", false
	}
	return kind, id, true
}

func ruleNotFound() *spec.Error { return spec.NotFound("the push rule was not found") }

// findRule looks a rule up for the GET handlers. A kind the server does
// not know (a client probing for an MSC's kind, such as postcontent) holds
// no rule: 404, as for any rule that does not exist, so that the client
// moves on; writing to such a kind stays a 400.
func (s *Service) findRule(c *gin.Context) (*Rule, bool) {
	kind, id := c.Param("kind"), c.Param("ruleId")
	if !validKind(kind) {
		c.Error(ruleNotFound())
		return nil, false
	}
	rs, err := s.Rules(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		c.Error(err)
		return nil, false
	}
	r, _ := rs.Find(kind, id)
	if r == nil {
		c.Error(ruleNotFound())
		return nil, false
	}
	return r, true
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
func (s *Service) getRule(c *gin.Context) {
	if r, ok := s.findRule(c); ok {
		c.JSON(http.StatusOK, r)
	}
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Service) getRuleEnabled(c *gin.Context) {
	if r, ok := s.findRule(c); ok {
		c.JSON(http.StatusOK, gin.H{"enabled": r.Enabled})
	}
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
func (s *Service) getRuleActions(c *gin.Context) {
	if r, ok := s.findRule(c); ok {
		actions := r.Actions
		if actions == nil {
			actions = []json.RawMessage{}
		}
		c.JSON(http.StatusOK, gin.H{"actions": actions})
	}
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: creates or
// replaces a user-defined rule. A new rule is enabled and, without before
// or after, the most important user rule of its kind; a replaced rule keeps
// its place and its enabled flag unless before/after moves it.
func (s *Service) putRule(c *gin.Context) {
	kind, id, ok := ruleParams(c)
	if !ok {
		return
	}
	if err := checkRuleID(kind, id); err != nil {
		c.Error(err)
		return
	}
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		c.Error(err)
		return
	}
	rawActions, has := body["actions"]
	if !has {
		c.Error(spec.MissingParam("actions is required"))
		return
	}
	var actions []json.RawMessage
	if err := json.Unmarshal(rawActions, &actions); err != nil || actions == nil {
		c.Error(spec.BadJSON("actions must be an array"))
		return
	}
	var conditions []json.RawMessage
	if raw, has := body["conditions"]; has && (kind == KindOverride || kind == KindUnderride) {
		if err := json.Unmarshal(raw, &conditions); err != nil || gjson.ParseBytes(raw).Type == gjson.Null {
			c.Error(spec.BadJSON("conditions must be an array"))
			return
		}
	}
	var pattern *string
	if raw, has := body["pattern"]; has && kind == KindContent {
		v := gjson.ParseBytes(raw)
		if v.Type != gjson.String {
			c.Error(spec.BadJSON("pattern must be a string"))
			return
		}
		pattern = &v.Str
	}
	r, err := newUserRule(kind, id, actions, conditions, pattern)
	if err != nil {
		c.Error(err)
		return
	}
	before, after := c.Query("before"), c.Query("after")
	err = s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
		user := rs.userRules(kind)
		total := 0
		for _, k := range Kinds {
			total += len(rs.userRules(k))
		}
		at := 0
		if old, i := findIn(user, id); old != nil {
			r.Enabled = old.Enabled
			user = append(user[:i], user[i+1:]...)
			at = i
		} else if total >= maxUserRules {
			return spec.TooLarge("a user may have at most %d push rules", maxUserRules)
		}
		switch {
		case before != "":
			_, i := findIn(user, before)
			if i < 0 {
				return spec.NewError(spec.ErrUnknown, "before/after rule not found: %s", before)
			}
			at = i
		case after != "":
			_, i := findIn(user, after)
			if i < 0 {
				return spec.NewError(spec.ErrUnknown, "before/after rule not found: %s", after)
			}
			at = i + 1
		}
		user = append(user[:at], append([]*Rule{r}, user[at:]...)...)
		*rs.list(kind) = placeUserRules(kind, rs.defaultRules(kind), user)
		return nil
	})
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: removes a
// user-defined rule. Server-default rules cannot be removed, only disabled.
func (s *Service) deleteRule(c *gin.Context) {
	kind, id, ok := ruleParams(c)
	if !ok {
		return
	}
	err := s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
		r, i := rs.Find(kind, id)
		if r == nil {
			return ruleNotFound()
		}
		if r.Default {
			return spec.InvalidParam("server-default rules cannot be deleted; disable them instead")
		}
		list := rs.list(kind)
		*list = append((*list)[:i:i], (*list)[i+1:]...)
		return nil
	})
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Service) putRuleEnabled(c *gin.Context) {
	kind, id, ok := ruleParams(c)
	if !ok {
		return
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		c.Error(err)
		return
	}
	if body.Enabled == nil {
		c.Error(spec.MissingParam("enabled is required"))
		return
	}
	err := s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
		r, _ := rs.Find(kind, id)
		if r == nil {
			return ruleNotFound()
		}
		r.Enabled = *body.Enabled
		return nil
	})
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions: also
// for server-default rules.
func (s *Service) putRuleActions(c *gin.Context) {
	kind, id, ok := ruleParams(c)
	if !ok {
		return
	}
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		c.Error(err)
		return
	}
	raw, has := body["actions"]
	if !has {
		c.Error(spec.MissingParam("actions is required"))
		return
	}
	actions, err := parseActions(raw)
	if err != nil {
		c.Error(err)
		return
	}
	err = s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
		r, _ := rs.Find(kind, id)
		if r == nil {
			return ruleNotFound()
		}
		r.Actions = actions
		return nil
	})
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}
