package admin

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// The CLI (`chatalot admin …`) opens the data directory's database while
// the server may be running. SQLite serialises the two processes' writes,
// and the CLI's writes take no stream position, so the database stays
// consistent; but the running server keeps accounts' sessions in memory,
// and the CLI cannot send room events or tell the E2EE directory (both
// need the server's stream positions). So every CLI change the server must
// act on queues a follow-up in the same transaction as the change; the
// server applies the queue at start and then whenever the CLI pokes it (the
// file beside the database that the CLI appends a line to after each
// change; the server looks at its size every FollowupInterval, so an idle
// server does not read the database every second):
//
//   - deactivation: the account's cached sessions stop working, the user
//     leaves every room, and the keys of the deleted devices go;
//   - password resets and admin changes: cached sessions are brought in
//     line with the database (logged-out devices stop working, the admin
//     flag changes).
//
// The database itself changes at once: a deactivated account or a new
// password is refused at the next login, and a revoked invite code at the
// next registration, whether or not the server runs. Sessions already open
// stop within FollowupInterval.

// FollowupInterval is how often the server looks for a poke from the CLI.
const FollowupInterval = time.Second

// followupIfCLI returns a write that queues a follow-up when the service
// runs in the CLI (and does nothing in the server, which applies its
// changes to memory itself).
func (s *Service) followupIfCLI(kind string, user spec.UserID, devices []string) func(*storage.Tx) error {
	return func(tx *storage.Tx) error {
		if !s.cli {
			return nil
		}
		if err := insertFollowup(tx, kind, user, devices); err != nil {
			return err
		}
		tx.AfterCommit(s.pokeServer)
		return nil
	}
}

// followupsPoke is the file the CLI appends to after queuing follow-ups.
func (s *Service) followupsPoke() string { return s.db.Path() + "-followups" }

// pokeServer tells a running server that follow-ups are queued. Each poke
// makes the file longer, so that two in the same clock tick still differ.
func (s *Service) pokeServer() {
	f, err := os.OpenFile(s.followupsPoke(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		_, err = f.Write([]byte("\n"))
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("could not tell a running server of the change; it applies it at its next start")
	}
}

// pokeStamp is what the server sees of the poke file: its size and time.
type pokeStamp struct{ size, modified int64 }

func (s *Service) currentPoke() pokeStamp {
	fi, err := os.Stat(s.followupsPoke())
	if err != nil {
		return pokeStamp{}
	}
	return pokeStamp{fi.Size(), fi.ModTime().UnixNano()}
}

// deviceIDs lists a user's devices, for the follow-up of a CLI change that
// deletes them.
func (s *Service) deviceIDs(ctx context.Context, user spec.UserID) ([]string, error) {
	if !s.cli {
		return nil, nil
	}
	devs, err := s.auth.Devices(ctx, user)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.DeviceID
	}
	return ids, nil
}

// RunFollowups applies the CLI's queued follow-ups now and then each time
// the CLI pokes, until ctx ends (server only). The stamp is taken before
// the queue is read: a poke after it is seen at the next look.
func (s *Service) RunFollowups(ctx context.Context) {
	t := time.NewTicker(FollowupInterval)
	defer t.Stop()
	seen, first := pokeStamp{}, true
	for {
		if stamp := s.currentPoke(); first || stamp != seen {
			first, seen = false, stamp
			if !s.ApplyFollowups(ctx) {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ApplyFollowups applies the queued follow-ups once. Each is applied at
// most once: a failure is logged and the follow-up dropped, as retrying
// every second would not make it succeed. It returns false once the
// database is closed.
func (s *Service) ApplyFollowups(ctx context.Context) bool {
	list, err := s.pendingFollowups(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "database is closed") {
			return false
		}
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("could not read the admin CLI's follow-ups")
		}
		return true
	}
	for _, f := range list {
		if err := s.applyFollowup(ctx, f); err != nil {
			s.log.Warn().Err(err).Str("user_id", string(f.User)).Str("kind", f.Kind).Msg("admin CLI follow-up failed")
		}
		if err := s.deleteFollowup(ctx, f.ID); err != nil {
			s.log.Warn().Err(err).Msg("could not clear an admin CLI follow-up")
			return true
		}
	}
	return true
}

func (s *Service) applyFollowup(ctx context.Context, f followup) error {
	if err := s.applySessionsFollowup(ctx, f); err != nil {
		return err
	}
	if f.Kind != "deactivated" || s.rooms == nil {
		return nil
	}
	// `chatalot admin deactivate --erase` set the erased flag; the rest of
	// the erasure needs the server's rooms and runs here.
	var erased bool
	if err := s.db.QueryRow(ctx, `SELECT erased FROM admin_user_flags WHERE user_id = $1`, string(f.User)).Scan(&erased); err != nil || !erased {
		return nil
	}
	_, err := s.Erase(ctx, CLIActor, f.User, false)
	return err
}

// applySessionsFollowup brings sessions, memberships and keys in line
// with what the CLI changed.
func (s *Service) applySessionsFollowup(ctx context.Context, f followup) error {
	if err := s.auth.RefreshSessions(ctx, f.User); err != nil {
		return err
	}
	if f.Kind == "deactivated" {
		s.forgetConnections(f.User)
		if s.rooms != nil {
			if err := s.rooms.LeaveAllRooms(ctx, f.User); err != nil {
				return err
			}
		}
	}
	if s.keys == nil || len(f.Devices) == 0 {
		return nil
	}
	left, err := s.auth.Devices(ctx, f.User)
	if err != nil {
		return err
	}
	still := map[string]bool{}
	for _, d := range left {
		still[d.DeviceID] = true
	}
	for _, d := range f.Devices {
		if !still[d] {
			if err := s.keys.DeviceDeleted(ctx, f.User, d); err != nil {
				return err
			}
		}
	}
	return nil
}
