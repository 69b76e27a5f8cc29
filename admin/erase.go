package admin

import (
	"context"
	"errors"

	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Account erasure: deactivation with erase (client-server API, or the
// admin API's POST /_synapse/admin/v1/deactivate/{userId} {"erase": true}).
//
// What goes: the profile, account data (push rules, tags, settings),
// devices, tokens and OAuth grants, every end-to-end key and key backup,
// pushers and notifications, filters, receipts, delayed events, the
// reports the user filed, and the media they uploaded that no room still
// needs (rooms.MediaNeeded); their messages and membership events are
// stored redacted (rooms.EraseSender). What stays, naming the user: the
// accounts row (deactivated, no password, no profile: the ID is never given
// out again), the events' sender and state_key in the room DAG (redacted,
// as the spec keeps them), the device list position that tells other
// users' clients the keys are gone, the erased flag, and the audit log
// entry that records the erasure.

// UserForgetter is a package that keeps rows about users: ForgetUser
// deletes every row it has for an erased user inside tx and counts them in
// removed. The admin package finds them among its Forgetters.
type UserForgetter interface {
	ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error
}

// Erasure is what erasing an account removed (or, in a dry run, would).
type Erasure struct {
	DryRun  bool            `json:"dry_run"`
	Removed storage.Removed `json:"removed_rows"` // rows per table; events_redacted counts rewritten events
	Total   int64           `json:"total_rows"`
	Media   media.Deletion  `json:"media"`
	// MediaKept is the uploads kept because a room still needs them; they
	// no longer name the user.
	MediaKept int64 `json:"media_kept"`
}

// eraseReportKey carries, in the context of an admin deactivation, where
// the erasure that auth triggers writes its figures.
type eraseReportKey struct{}

// Erase erases an account that is deactivated (see above). Rooms first,
// one transaction per room, then media, then every package's rows, the
// erased flag and the audit entry in one transaction: a crash in between
// leaves the account partly erased, and erasing it again finishes the job
// (every step is idempotent). A dry run changes nothing but the audit log.
func (s *Service) Erase(ctx context.Context, who Actor, user spec.UserID, dryRun bool) (Erasure, error) {
	return s.erase(ctx, who, user, dryRun, true, nil)
}

// erase is Erase; a dry run records itself in the audit log only with
// record. floor is what a dry run counted before the deactivation
// removed its part (devices, tokens, pushers, device keys): the figures
// answered and recorded are, per table, the larger of the two, so that
// they say what the deactivation and the erasure removed together.
func (s *Service) erase(ctx context.Context, who Actor, user spec.UserID, dryRun, record bool, floor storage.Removed) (Erasure, error) {
	out := Erasure{DryRun: dryRun, Removed: storage.Removed{}}
	if s.rooms != nil {
		removed, err := s.rooms.EraseSender(ctx, user, dryRun)
		if err != nil {
			return out, err
		}
		for k, v := range removed {
			out.Removed[k] += v
		}
	}
	if s.media != nil {
		var keep media.Keep
		if s.rooms != nil {
			keep = func(tx *storage.Tx, uri string) (bool, error) { return s.rooms.MediaNeeded(tx, uri, user) }
		}
		del, err := s.media.DeleteUploadsOf(ctx, user, dryRun, keep)
		if err != nil {
			return out, err
		}
		out.Media, out.MediaKept = del, int64(del.Kept)
		out.Removed["media"] += int64(del.Media)
		out.Removed["media_thumbnails"] += int64(del.Thumbnails)
	}
	var forgetters []UserForgetter
	for _, f := range s.forgetters {
		if u, ok := f.(UserForgetter); ok {
			forgetters = append(forgetters, u)
		}
	}
	if s.auth != nil && !s.forgetsAuth() {
		forgetters = append(forgetters, s.auth)
	}
	action := "erase_user"
	if dryRun {
		action = "erase_user_dry_run"
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, f := range forgetters {
			if err := f.ForgetUser(tx, user, out.Removed); err != nil {
				return err
			}
		}
		if err := tx.Delete(out.Removed, "admin_notice_rooms", `DELETE FROM admin_notice_rooms WHERE user_id = $1`, string(user)); err != nil {
			return err
		}
		for k, v := range floor {
			out.Removed[k] = max(out.Removed[k], v)
		}
		out.Total = out.Removed.Total()
		if dryRun {
			return errDryRun
		}
		if err := setFlag(tx, user, "erased", true); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.applyFlag(user, "erased", true)
			s.mu.Lock()
			if room, ok := s.noticeRooms[user]; ok {
				delete(s.noticeRooms, user)
				delete(s.noticeRoom, room)
			}
			s.mu.Unlock()
		})
		return insertAudit(tx, s.entry(who, action, string(user), map[string]any{"removed_rows": out.Removed, "media": out.Media}))
	})
	if dryRun && errors.Is(err, errDryRun) && !record {
		return out, nil
	}
	if dryRun && errors.Is(err, errDryRun) {
		err = s.record(ctx, who, action, string(user), map[string]any{"removed_rows": out.Removed, "media": out.Media}, nil)
	}
	if err != nil {
		return out, err
	}
	s.forgetConnections(user)
	if !dryRun {
		if err := s.db.FreePages(ctx); err != nil {
			s.log.Warn().Err(err).Msg("erasure: could not give the pages back") // the rows are gone all the same
		}
	}
	s.log.Info().Str("user_id", string(user)).Bool("dry_run", dryRun).Int64("rows", out.Total).
		Int("media", out.Media.Media).Int64("media_bytes", out.Media.Bytes).Msg("account erased")
	return out, nil
}

// errDryRun rolls a dry run's write back.
var errDryRun = errors.New("dry run")

// entry is an audit row of an action by who, now.
func (s *Service) entry(who Actor, action, target string, details map[string]any) AuditEntry {
	return AuditEntry{TS: s.now().UnixMilli(), Actor: who.String(), Origin: s.origin(), Action: action, Target: target, Details: details}
}

// forgetsAuth says whether auth is among the Forgetters already.
func (s *Service) forgetsAuth() bool {
	for _, f := range s.forgetters {
		if f == any(s.auth) {
			return true
		}
	}
	return false
}

// eraseAccount is the erasure auth calls after a deactivation with erase
// (Policy.EraseAccount). In an admin deactivation, the admin is the actor
// and the figures go back to the handler; from the client API, the user
// erased their own account.
func (s *Service) eraseAccount(ctx context.Context, user spec.UserID) error {
	who := Actor{User: user}
	report, _ := ctx.Value(eraseReportKey{}).(*erasing)
	if report != nil {
		who = report.who
	}
	var floor storage.Removed
	if report != nil {
		floor = report.before.Removed
	}
	e, err := s.erase(ctx, who, user, false, true, floor)
	if report != nil {
		report.out = e
	}
	return err
}

// erasing is an admin deactivation's request for the erasure's figures:
// before is a dry run's, counted before the deactivation.
type erasing struct {
	who    Actor
	before Erasure
	out    Erasure
}

// EraseAccount implements auth.AccountEraser: auth is built before the
// admin Service, which sets the erasure here when it is built.
func (p *Policy) EraseAccount(ctx context.Context, user spec.UserID) error {
	p.mu.RLock()
	f := p.eraser
	p.mu.RUnlock()
	if f == nil {
		return nil
	}
	return f(ctx, user)
}
