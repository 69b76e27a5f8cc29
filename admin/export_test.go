package admin

import (
	"context"

	"github.com/chatalot/chatalot/storage"
)

// AuditForTest is audit, for the external tests (admin_test.go).
func (s *Service) AuditForTest(ctx context.Context, who Actor, action, target string, details map[string]any, extra func(*storage.Tx) error) (context.Context, func(error) error) {
	return s.audit(ctx, who, action, target, details, extra)
}

// PendingFollowupsForTest lists the follow-ups the CLI queued and the
// server has not applied.
func (s *Service) PendingFollowupsForTest(ctx context.Context) ([]followup, error) {
	return s.pendingFollowups(ctx)
}
