package sync

import (
	"context"
	"encoding/json"

	"github.com/chatalot/chatalot/spec"
)

// EncodeForTest builds an initial, unfiltered sync of the user's device and
// returns it as the hand-written encoder writes it and as encoding/json
// marshals it, for the external tests (sync_test.go).
func EncodeForTest(ctx context.Context, s *Service, user spec.UserID, device string) (hand, std []byte, err error) {
	resp, _, err := s.build(ctx, &request{user: user, device: device, filter: &Filter{}})
	if err != nil {
		return nil, nil, err
	}
	std, err = json.Marshal(resp)
	return resp.encode(), std, err
}

// NarrowedWaiters counts the waiters that wait for the changes their
// answer can be changed by only: sliding sync connections that built their
// answer and now wait (a test that sends waits for these, not for any
// waiter, or the send may race the build).
func (n *Notifier) NarrowedWaiters() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.waiters {
		for w := range m {
			if w.in != nil {
				c++
			}
		}
	}
	return c
}
