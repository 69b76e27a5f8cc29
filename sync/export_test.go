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
