package push

import (
	"context"
	"encoding/json"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// pushRulesType is the account data type of a user's push rules.
const pushRulesType = "m.push_rules"

// maxRulesContent bounds the stored m.push_rules content.
const maxRulesContent = 256 << 10

// rulesOf returns the user's current rules, from the cache or read once from
// their account data (the server defaults when none are stored).
func (s *Service) rulesOf(ctx context.Context, user spec.UserID) (*userRules, error) {
	if v, ok := s.rules.Load(user); ok {
		return v.(*userRules), nil
	}
	var content json.RawMessage
	if s.acct != nil {
		c, found, err := s.acct.GetAccountData(ctx, user, "", pushRulesType)
		if err != nil {
			return nil, err
		}
		if found {
			content = c
		}
	}
	set := rulesFromAccountData(content, user)
	ur := &userRules{set: set, compiled: compile(set)}
	// A change stored in the meantime wins: LoadOrStore keeps it.
	v, _ := s.rules.LoadOrStore(user, ur)
	return v.(*userRules), nil
}

// Rules returns the user's current ruleset (read-only).
func (s *Service) Rules(ctx context.Context, user spec.UserID) (*Ruleset, error) {
	ur, err := s.rulesOf(ctx, user)
	if err != nil {
		return nil, err
	}
	return ur.set, nil
}

// changeRules applies a change to a copy of the user's rules and stores the
// result as their m.push_rules account data, which wakes their /sync with
// the new rules. Changes are serialised so that none is lost.
func (s *Service) changeRules(ctx context.Context, user spec.UserID, change func(*Ruleset) error) error {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	cur, err := s.rulesOf(ctx, user)
	if err != nil {
		return err
	}
	next := cur.set.clone()
	if err := change(next); err != nil {
		return err
	}
	content, err := next.accountData()
	if err != nil {
		return err
	}
	if len(content) > maxRulesContent {
		return spec.TooLarge("the push rules would be over %d bytes", maxRulesContent)
	}
	if s.acct == nil {
		return spec.Internal("push rules cannot be stored")
	}
	if err := s.acct.SetAccountData(ctx, user, "", pushRulesType, content); err != nil {
		return err
	}
	s.rules.Store(user, &userRules{set: next, compiled: compile(next)})
	return nil
}

// SyncAccountData is the account data /sync reads (sync.AccountData).
type SyncAccountData interface {
	AccountData(ctx context.Context, user spec.UserID, since, until int64) (global []json.RawMessage, perRoom map[spec.RoomID][]json.RawMessage, err error)
	AccountDataPosition(user spec.UserID) int64
	GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error)
	SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error
	IgnoredUsers(user spec.UserID) map[spec.UserID]bool
}

// WithRules wraps the account data /sync reads so that m.push_rules is
// always there and always current, without storing anything for users who
// never changed a rule:
//
//   - an initial sync (since 0) of a user with no stored rules gets the
//     server defaults as m.push_rules — matrix-js-sdk and Element read the
//     rules from the first sync;
//   - a stored m.push_rules is re-rendered through the current defaults, so
//     a rule added by a newer Chatalot shows up without a migration.
//
// Rules are written to account data only when the user changes one, through
// the /pushrules endpoints; that write takes a stream position, so the
// change reaches every client in its next incremental sync.
func (s *Service) WithRules(inner SyncAccountData) SyncAccountData {
	return &rulesAccountData{SyncAccountData: inner, s: s}
}

type rulesAccountData struct {
	SyncAccountData
	s *Service
}

func (r *rulesAccountData) AccountData(ctx context.Context, user spec.UserID, since, until int64) ([]json.RawMessage, map[spec.RoomID][]json.RawMessage, error) {
	global, perRoom, err := r.SyncAccountData.AccountData(ctx, user, since, until)
	if err != nil {
		return nil, nil, err
	}
	at := -1
	for i, ev := range global {
		if gjson.GetBytes(ev, "type").Str == pushRulesType {
			at = i
			break
		}
	}
	if at < 0 && since > 0 {
		return global, perRoom, nil
	}
	ur, err := r.s.rulesOf(ctx, user)
	if err != nil {
		return nil, nil, err
	}
	content, err := ur.set.accountData()
	if err != nil {
		return nil, nil, err
	}
	ev, err := json.Marshal(map[string]any{"type": pushRulesType, "content": json.RawMessage(content)})
	if err != nil {
		return nil, nil, err
	}
	out := make([]json.RawMessage, len(global), len(global)+1)
	copy(out, global)
	if at < 0 {
		out = append(out, ev)
	} else {
		out[at] = ev
	}
	return out, perRoom, nil
}

func (r *rulesAccountData) GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error) {
	if room != "" || typ != pushRulesType {
		return r.SyncAccountData.GetAccountData(ctx, user, room, typ)
	}
	ur, err := r.s.rulesOf(ctx, user)
	if err != nil {
		return nil, false, err
	}
	content, err := ur.set.accountData()
	return content, err == nil, err
}
