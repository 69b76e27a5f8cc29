package push

import (
	"context"
	"net/http"

	"github.com/chatalot/chatalot/storage"
)

// What the external tests (package push_test) reach inside push.
var (
	MaxTracked           = maxTracked
	FlushDelay           = flushDelay
	NotifyPath           = notifyPath
	MasterRuleID         = masterRuleID
	RulesFromAccountData = rulesFromAccountData
	DialControl          = dialControl
	PublicAddr           = publicAddr
)

// FlushForTest moves staged notifications on at once, as the timer would.
func (s *Service) FlushForTest() { s.flush() }

// FlushWithForTest is flushWith: a flush with other thresholds.
func (s *Service) FlushWithForTest(minEvents, maxRows int) { s.flushWith(minEvents, maxRows) }

// GatewayClientForTest is the HTTP client that delivers to push gateways.
func (s *Service) GatewayClientForTest() *http.Client { return s.gateways.client }

// FollowedForTest is what a follower reads of the notifications stored at
// positions in (from, to]: "user room" per notification.
func (s *Service) FollowedForTest(from, to int64) ([]string, error) {
	var out []string
	err := s.db.Write(context.Background(), func(tx *storage.Tx) error {
		rows, err := s.followedRows(tx, from, to)
		for _, r := range rows {
			out = append(out, string(r.user)+" "+string(r.room))
		}
		return err
	})
	return out, err
}
