package push

import "net/http"

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
