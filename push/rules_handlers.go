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
func (s *Service) getAllRules(c *gin.Context) error {
	rs, err := s.Rules(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"global": rs})
	return nil
}

// GET /_matrix/client/v3/pushrules/global/: the global ruleset.
func (s *Service) getGlobalRules(c *gin.Context) error {
	rs, err := s.Rules(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, rs)
	return nil
}

// ruleParams reads {kind} and {ruleId} from the path.
func ruleParams(c *gin.Context) (kind, id string, err error) {
	kind, id = c.Param("kind"), c.Param("ruleId")
	if !validKind(kind) {
		return "", "", spec.InvalidParam("unknown push rule kind %q: use override, content, room, sender or underride", kind)
	}
	return kind, id, nil
}

func ruleNotFound() *spec.Error { return spec.NotFound("the push rule was not found") }

// findRule looks a rule up for the GET handlers. A kind the server does
// not know (a client probing for an MSC's kind, such as postcontent) holds
// no rule: 404, as for any rule that does not exist, so that the client
// moves on; writing to such a kind stays a 400.
func (s *Service) findRule(c *gin.Context) (*Rule, error) {
	kind, id := c.Param("kind"), c.Param("ruleId")
	if !validKind(kind) {
		return nil, ruleNotFound()
	}
	rs, err := s.Rules(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		return nil, err
	}
	r, _ := rs.Find(kind, id)
	if r == nil {
		return nil, ruleNotFound()
	}
	return r, nil
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
func (s *Service) getRule(c *gin.Context) error {
	r, err := s.findRule(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, r)
	return nil
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Service) getRuleEnabled(c *gin.Context) error {
	r, err := s.findRule(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"enabled": r.Enabled})
	return nil
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
func (s *Service) getRuleActions(c *gin.Context) error {
	r, err := s.findRule(c)
	if err != nil {
		return err
	}
	actions := r.Actions
	if actions == nil {
		actions = []json.RawMessage{}
	}
	c.JSON(http.StatusOK, gin.H{"actions": actions})
	return nil
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: creates or
// replaces a user-defined rule. A new rule is enabled and, without before
// or after, the most important user rule of its kind; a replaced rule keeps
// its place and its enabled flag unless before/after moves it.
func (s *Service) putRule(c *gin.Context) error {
	kind, id, err := ruleParams(c)
	if err != nil {
		return err
	}
	if err := checkRuleID(kind, id); err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	r, err := ruleFromBody(kind, id, body)
	if err != nil {
		return err
	}
	before, after := c.Query("before"), c.Query("after")
	err = s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
		return rs.putUserRule(r, before, after)
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// ruleFromBody reads a user rule from a PUT body: its actions, and the
// conditions (override, underride) or pattern (content) of its kind.
func ruleFromBody(kind, id string, body map[string]json.RawMessage) (*Rule, error) {
	rawActions, has := body["actions"]
	if !has {
		return nil, spec.MissingParam("actions is required")
	}
	var actions []json.RawMessage
	if err := json.Unmarshal(rawActions, &actions); err != nil || actions == nil {
		return nil, spec.BadJSON("actions must be an array")
	}
	var conditions []json.RawMessage
	if raw, has := body["conditions"]; has && (kind == KindOverride || kind == KindUnderride) {
		if err := json.Unmarshal(raw, &conditions); err != nil || gjson.ParseBytes(raw).Type == gjson.Null {
			return nil, spec.BadJSON("conditions must be an array")
		}
	}
	var pattern *string
	if raw, has := body["pattern"]; has && kind == KindContent {
		v := gjson.ParseBytes(raw)
		if v.Type != gjson.String {
			return nil, spec.BadJSON("pattern must be a string")
		}
		pattern = &v.Str
	}
	return newUserRule(kind, id, actions, conditions, pattern)
}

// putUserRule adds or replaces the user rule r of its kind. A replaced rule
// keeps its place and enabled flag; before or after (rule IDs of the same
// kind) move it; a new rule goes first. A user has at most maxUserRules.
func (rs *Ruleset) putUserRule(r *Rule, before, after string) error {
	kind := r.kind
	user := rs.userRules(kind)
	total := 0
	for _, k := range Kinds {
		total += len(rs.userRules(k))
	}
	at := 0
	if old, i := findIn(user, r.RuleID); old != nil {
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
}

// DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: removes a
// user-defined rule. Server-default rules cannot be removed, only disabled.
func (s *Service) deleteRule(c *gin.Context) error {
	kind, id, err := ruleParams(c)
	if err != nil {
		return err
	}
	err = s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
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
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Service) putRuleEnabled(c *gin.Context) error {
	kind, id, err := ruleParams(c)
	if err != nil {
		return err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if body.Enabled == nil {
		return spec.MissingParam("enabled is required")
	}
	err = s.changeRules(c.Request.Context(), auth.DeviceFrom(c).UserID, func(rs *Ruleset) error {
		r, _ := rs.Find(kind, id)
		if r == nil {
			return ruleNotFound()
		}
		r.Enabled = *body.Enabled
		return nil
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions: also
// for server-default rules.
func (s *Service) putRuleActions(c *gin.Context) error {
	kind, id, err := ruleParams(c)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	raw, has := body["actions"]
	if !has {
		return spec.MissingParam("actions is required")
	}
	actions, err := parseActions(raw)
	if err != nil {
		return err
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
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}
